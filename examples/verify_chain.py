#!/usr/bin/env python3
"""Verify a KoproGo Grid green-proof chain with nothing but the Python standard library.

Input (stdin): a JSON array of links, each with the fields of the `green_proof` table:
seq, task_id, node_id, energy_uwh, solar_uwh, carbon_ng, value_peur, created_at, difficulty,
prev_hash, nonce, hash. `created_at` is an RFC 3339 UTC time; it is re-encoded with exactly six
fractional digits. Output: {"valid", "length", "head_hash", "first_invalid_seq", "reason"};
exit status 1 when the chain is broken.
"""
import hashlib, json, sys
from datetime import datetime, timezone

GENESIS = "0" * 64

def canonical_time(text):
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"

def encode(link):
    fields = ["kgp1", link["seq"], link["task_id"].lower(), link["node_id"].lower(), link["energy_uwh"],
              link["solar_uwh"], link["carbon_ng"], link["value_peur"], canonical_time(link["created_at"]),
              link["difficulty"], link["prev_hash"], link["nonce"]]
    return "|".join(str(field) for field in fields).encode("utf-8")

def leading_zero_bits(digest):
    bits = 0
    for byte in digest:
        if byte:
            return bits + 8 - byte.bit_length()
        bits += 8
    return bits

def verify(links, min_difficulty=0):
    expected_seq, prev_hash = 1, GENESIS
    for link in sorted(links, key=lambda link: link["seq"]):
        digest = hashlib.sha256(encode(link)).digest()
        problem = None
        if link["seq"] != expected_seq:
            problem = f"expected seq {expected_seq} here, found seq {link['seq']}"
        elif link["prev_hash"] != prev_hash:
            problem = "prev_hash does not match the previous link's hash"
        elif link["difficulty"] < min_difficulty:
            problem = "difficulty below the required one"
        elif digest.hex() != link["hash"]:
            problem = "hash does not match the link's contents"
        elif leading_zero_bits(digest) < link["difficulty"]:
            problem = "hash does not meet the difficulty"
        if problem:
            return {"valid": False, "length": expected_seq - 1, "head_hash": prev_hash,
                    "first_invalid_seq": min(link["seq"], expected_seq), "reason": problem}
        expected_seq, prev_hash = expected_seq + 1, link["hash"]
    return {"valid": True, "length": expected_seq - 1, "head_hash": prev_hash, "first_invalid_seq": None, "reason": None}

if __name__ == "__main__":
    minimum = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    verdict = verify(json.load(sys.stdin), minimum)
    print(json.dumps(verdict))
    sys.exit(0 if verdict["valid"] else 1)
