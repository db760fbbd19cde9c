#!/usr/bin/env python3
"""Verify a KoproGo Grid green-proof chain, or one task's inclusion proofs, with nothing but the
Python standard library.

    verify_chain.py [--cell NAME] [MIN_DIFFICULTY] < chain.json
    verify_chain.py --proof < task_proofs.json

Chain input (stdin): {"links": [...], "blocks": [...], "leaves": [...]}, the rows of the
`green_proof`, `proof_block` and `proof_leaf` tables (a bare array is read as links alone).
Each cell of a grid has its own chain: rows are grouped by their `cell_id` (a row without one
is the cell `main`'s, as rows written before cells are), and each cell's chain is verified on
its own; `--cell NAME` verifies that cell's alone.
The `kgp1` links are checked in seq order; then the `kgp2` blocks in height order, the first
chaining onto the last link: each leaf against its stored hash and its place, a `kgp3` leaf's
credit recomputed from the carbon signal and rates it records, the RFC 6962 Merkle root of the
leaves, the block line's hash and its difficulty. Output, as GET /v1/proofs/verify: {"cell",
"valid", "length", "blocks", "leaves", "head_hash", "head_height", "first_invalid_seq",
"first_invalid_block", "first_invalid_leaf", "reason"}, about the cell asked for; for all
cells, "valid" holds when every cell's chain does, "cells" lists each cell's verdict, and the
other fields are the first broken cell's, else `main`'s (else the first cell's).

Proof input: the answer of GET /v1/proofs/tasks/{task_id}. Each sealed proof is checked from
the leaf line to the block: a `kgp3` leaf's credit recomputed from its line, leaf hash, the root its audit path implies, the block line's root,
the block's hash and difficulty. Output: {"valid", "proofs": [{"cell", "node_id", "status",
"valid", "reason"}]}.

Exit status 1 when something does not hold.
"""
import hashlib, json, sys
from datetime import datetime, timezone

GENESIS = "0" * 64


def canonical_time(text):
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


def leading_zero_bits(digest):
    bits = 0
    for byte in digest:
        if byte:
            return bits + 8 - byte.bit_length()
        bits += 8
    return bits


def sha256(data):
    return hashlib.sha256(data).digest()


# --- kgp1 links ------------------------------------------------------------------------------

def encode_link(link):
    fields = ["kgp1", link["seq"], link["task_id"].lower(), link["node_id"].lower(), link["energy_uwh"],
              link["solar_uwh"], link["carbon_ng"], link["value_peur"], canonical_time(link["created_at"]),
              link["difficulty"], link["prev_hash"], link["nonce"]]
    return "|".join(str(field) for field in fields).encode("utf-8")


def verify_links(links, min_difficulty):
    expected_seq, prev_hash = 1, GENESIS
    for link in sorted(links, key=lambda link: link["seq"]):
        digest = sha256(encode_link(link))
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
            return expected_seq - 1, prev_hash, (min(link["seq"], expected_seq), problem)
        expected_seq, prev_hash = expected_seq + 1, link["hash"]
    return expected_seq - 1, prev_hash, None


# --- RFC 6962 Merkle trees -------------------------------------------------------------------

def leaf_hash(data):
    return sha256(b"\x00" + data)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def merkle_root(hashes):
    if not hashes:
        return sha256(b"")
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return node_hash(merkle_root(hashes[:k]), merkle_root(hashes[k:]))


def root_from_path(leaf, index, size, path):
    """RFC 9162 §2.1.3.2: the root implied by a leaf, its index, the tree size and its path."""
    if index >= size:
        return None
    fn, sn, digest = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            digest = node_hash(sibling, digest)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            digest = node_hash(digest, sibling)
        fn, sn = fn >> 1, sn >> 1
    return digest if sn == 0 else None


# --- leaves (kgp3, and kgp2 from before carbon signals) and blocks -----------------------------

def leaf_line(leaf):
    head = [leaf["task_id"].lower(), leaf["node_id"].lower(), leaf["attempt"], leaf["energy_uwh"], leaf["solar_uwh"]]
    tail = [leaf["carbon_ng"], leaf["node_peur"], leaf["cooperative_peur"], canonical_time(leaf["credited_at"])]
    if leaf.get("zone") is None:
        fields = ["kgp2-leaf", *head, *tail]
    else:
        basis = [leaf["zone"], canonical_time(leaf["intensity_hour"]), leaf["intensity_mg_per_kwh"],
                 leaf["intensity_kind"], leaf["intensity_source"], leaf["price_peur_per_kg"], leaf["node_share_percent"]]
        fields = ["kgp3-leaf", *head, *basis, *tail]
    return "|".join(str(field) for field in fields).encode("utf-8")


def recompute_leaf(line):
    """None when a kgp3 leaf line's credit follows from the signal and rates it records (kgp2
    lines record no inputs), else the reason. Every division rounds down."""
    fields = line.split("|")
    if fields[0] == "kgp2-leaf" and len(fields) == 10:
        return None
    if fields[0] != "kgp3-leaf" or len(fields) != 17:
        return "the leaf line is neither a kgp2 nor a kgp3 line"
    try:
        solar, intensity, price, percent, carbon, node, cooperative = (int(fields[i]) for i in (5, 8, 11, 12, 13, 14, 15))
    except ValueError:
        return "a figure of the leaf is not a whole number"
    expected_carbon = solar * intensity // 1000
    total = expected_carbon * price // 10**12
    expected_node = total * percent // 100
    if carbon != expected_carbon:
        return f"the credit does not follow from its basis: {carbon} ng recorded, {expected_carbon} ng recomputed"
    if (node, cooperative) != (expected_node, total - expected_node):
        return "the credit does not follow from its basis: its shares are not the rule's split"
    return None


def block_line(block):
    fields = ["kgp2", block["height"], block["prev_hash"], block["merkle_root"], block["leaf_count"],
              canonical_time(block["sealed_at"]), block["difficulty"], block["nonce"]]
    return "|".join(str(field) for field in fields).encode("utf-8")


def check_block(block, leaves, expected_height, prev_hash, min_difficulty):
    """None when the block holds, else (height, leaf index or None, reason)."""
    height = block["height"]
    if height != expected_height:
        return min(height, expected_height), None, f"expected block {expected_height} here, found block {height}"
    if block["prev_hash"] != prev_hash:
        return height, None, "prev_hash does not match the previous block's hash"
    if block["difficulty"] < min_difficulty:
        return height, None, "difficulty below the required one"
    hashes = []
    for position, leaf in enumerate(leaves):
        if leaf["leaf_index"] != position:
            reason = f"leaf {position} is missing" if leaf["leaf_index"] > position else f"leaf {leaf['leaf_index']} appears twice"
            return height, position, reason
        line = leaf_line(leaf)
        digest = leaf_hash(line)
        if digest.hex() != leaf["leaf_hash"]:
            return height, position, "the leaf does not match its hash"
        misreckoned = recompute_leaf(line.decode("utf-8"))
        if misreckoned:
            return height, position, misreckoned
        hashes.append(digest)
    if len(leaves) != block["leaf_count"]:
        missing = len(leaves) if len(leaves) < block["leaf_count"] else None
        return height, missing, f"{len(leaves)} leaves, the block counts {block['leaf_count']}"
    if merkle_root(hashes).hex() != block["merkle_root"]:
        return height, None, "the Merkle root does not match the leaves (edited, reordered or replaced)"
    digest = sha256(block_line(block))
    if digest.hex() != block["hash"]:
        return height, None, "hash does not match the block's contents"
    if leading_zero_bits(digest) < block["difficulty"]:
        return height, None, "hash does not meet the difficulty"
    return None


def verify_chain(chain, min_difficulty=0):
    if isinstance(chain, list):
        chain = {"links": chain}
    length, head, broken = verify_links(chain.get("links", []), min_difficulty)
    verdict = {"valid": broken is None, "length": length, "blocks": 0, "leaves": 0, "head_hash": head,
               "head_height": None, "first_invalid_seq": broken[0] if broken else None,
               "first_invalid_block": None, "first_invalid_leaf": None, "reason": broken[1] if broken else None}
    if broken:
        return verdict
    by_block = {}
    for leaf in chain.get("leaves", []):
        by_block.setdefault(leaf["block_height"], []).append(leaf)
    expected = 1
    for block in sorted(chain.get("blocks", []), key=lambda block: block["height"]):
        leaves = sorted(by_block.get(block["height"], []), key=lambda leaf: leaf["leaf_index"])
        problem = check_block(block, leaves, expected, head, min_difficulty)
        if problem:
            verdict.update(valid=False, first_invalid_block=problem[0], first_invalid_leaf=problem[1], reason=problem[2])
            return verdict
        verdict["blocks"] += 1
        verdict["leaves"] += len(leaves)
        verdict["head_height"] = block["height"]
        head, expected = block["hash"], expected + 1
        verdict["head_hash"] = head
    return verdict


def cell_of(row):
    return row.get("cell_id") or "main"


def verify_cells(chain, min_difficulty=0, only=None):
    """Each cell's chain on its own (see the module's documentation)."""
    if isinstance(chain, list):
        chain = {"links": chain}
    cells = {}
    for part in ("links", "blocks", "leaves"):
        for row in chain.get(part, []):
            cells.setdefault(cell_of(row), {}).setdefault(part, []).append(row)
    if only is not None:
        verdict = verify_chain(cells.get(only, {}), min_difficulty)
        return {"cell": only, **verdict}
    names = sorted(cells) or ["main"]
    verdicts = [{"cell": name, **verify_chain(cells.get(name, {}), min_difficulty)} for name in names]
    shown = next((verdict for verdict in verdicts if not verdict["valid"]), None) \
        or next((verdict for verdict in verdicts if verdict["cell"] == "main"), verdicts[0])
    return {**shown, "valid": all(verdict["valid"] for verdict in verdicts), "cells": verdicts}


# --- one task's inclusion proofs -------------------------------------------------------------

def verify_proof(proof):
    """None when the sealed proof holds from the leaf line to the block, else the reason."""
    misreckoned = recompute_leaf(proof["leaf_line"])
    if misreckoned:
        return misreckoned
    leaf = leaf_hash(proof["leaf_line"].encode("utf-8"))
    if leaf.hex() != proof["leaf_hash"]:
        return "the leaf line does not hash to the leaf hash"
    block = proof["block"]
    path = [bytes.fromhex(sibling) for sibling in proof["audit_path"]]
    root = root_from_path(leaf, proof["leaf_index"], proof["tree_size"], path)
    if root is None:
        return "the audit path does not fit the leaf's index and the block's size"
    fields = block["line"].split("|")
    if len(fields) != 8 or fields[0] != "kgp2":
        return "the block line is not a kgp2 line"
    if fields[3] != root.hex() or block["merkle_root"] != root.hex():
        return "the root the path implies is not the block's"
    if int(fields[4]) != proof["tree_size"]:
        return "the tree size is not the block's leaf count"
    digest = sha256(block["line"].encode("utf-8"))
    if digest.hex() != block["hash"]:
        return "the block line does not hash to the block hash"
    if leading_zero_bits(digest) < int(fields[6]):
        return "the block hash does not meet its difficulty"
    return None


def verify_task_proofs(answer):
    proofs = answer.get("proofs", [answer] if "leaf_line" in answer else [])
    results = []
    for proof in proofs:
        if proof.get("status") != "sealed":
            results.append({"cell": proof.get("cell"), "node_id": proof.get("node_id"), "status": proof.get("status"),
                            "valid": None, "reason": "pending: its block is not sealed yet"})
            continue
        reason = verify_proof(proof)
        results.append({"cell": proof.get("cell"), "node_id": proof.get("node_id"), "status": "sealed",
                        "valid": reason is None, "reason": reason})
    valid = bool(results) and all(result["valid"] is not False for result in results)
    return {"valid": valid, "proofs": results}


def usage(problem):
    print(f"verify_chain.py: {problem}\n{__doc__.splitlines()[3]}\n{__doc__.splitlines()[4]}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] == ["--proof"]:
        verdict = verify_task_proofs(json.load(sys.stdin))
    else:
        cell = None
        if arguments[:1] == ["--cell"]:
            if len(arguments) < 2:
                usage("--cell takes a cell's name")
            cell, arguments = arguments[1], arguments[2:]
        if len(arguments) > 1 or (arguments and not arguments[0].isdigit()):
            usage(f"unexpected arguments {arguments}")
        minimum = int(arguments[0]) if arguments else 0
        verdict = verify_cells(json.load(sys.stdin), minimum, cell)
    print(json.dumps(verdict))
    sys.exit(0 if verdict["valid"] else 1)
