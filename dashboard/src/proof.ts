// An inclusion proof checked in the browser with WebCrypto's SHA-256 (README "Auditing"):
// the leaf line hashes to the leaf hash (RFC 6962: SHA-256(0x00 ‖ line)), the audit path
// leads to the block line's Merkle root, the block line hashes to the block's hash, which has
// the block's difficulty in leading zero bits.

import type { components } from "./api";

type Inclusion = components["schemas"]["InclusionView"];

const encoder = new TextEncoder();

async function sha256(parts: Uint8Array[]): Promise<Uint8Array> {
  const length = parts.reduce((sum, part) => sum + part.length, 0);
  const joined = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    joined.set(part, at);
    at += part.length;
  }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
}

const hex = (bytes: Uint8Array) => Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");

function unhex(text: string): Uint8Array | null {
  if (!/^[0-9a-f]{64}$/.test(text)) return null;
  return Uint8Array.from(text.match(/../g)!.map((pair) => parseInt(pair, 16)));
}

const leafHash = (line: string) => sha256([Uint8Array.of(0), encoder.encode(line)]);
const nodeHash = (left: Uint8Array, right: Uint8Array) => sha256([Uint8Array.of(1), left, right]);

/** RFC 9162 §2.1.3.2: the root a leaf's audit path implies. */
async function rootFromPath(leaf: Uint8Array, index: number, size: number, path: Uint8Array[]) {
  if (index >= size) return null;
  let [fn, sn, hash] = [index, size - 1, leaf];
  for (const sibling of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      hash = await nodeHash(sibling, hash);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      hash = await nodeHash(hash, sibling);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? hash : null;
}

function leadingZeroBits(bytes: Uint8Array): number {
  let bits = 0;
  for (const byte of bytes) {
    if (byte === 0) {
      bits += 8;
      continue;
    }
    return bits + Math.clz32(byte) - 24;
  }
  return bits;
}

/** `null` when the proof holds, else why it does not. */
export async function verifyInclusion(proof: Inclusion): Promise<string | null> {
  if (proof.status !== "sealed" || !proof.block || proof.tree_size == null) return "not sealed yet";
  const leaf = await leafHash(proof.leaf_line);
  if (hex(leaf) !== proof.leaf_hash) return "the leaf line does not hash to the leaf hash";
  const path = proof.audit_path.map(unhex);
  if (path.some((step) => step === null)) return "the audit path holds something other than hashes";
  const root = await rootFromPath(leaf, proof.leaf_index, proof.tree_size, path as Uint8Array[]);
  const fields = proof.block.line.split("|");
  if (fields.length !== 8 || fields[0] !== "kgp2") return "the block line is not a kgp2 line";
  if (!root || hex(root) !== fields[3]) return "the root the path implies is not the block's";
  if (fields[4] !== String(proof.tree_size)) return "the tree size is not the block's leaf count";
  const blockHash = await sha256([encoder.encode(proof.block.line)]);
  if (hex(blockHash) !== proof.block.hash) return "the block line does not hash to the block hash";
  if (leadingZeroBits(blockHash) < Number(fields[6])) return "the block hash does not meet its difficulty";
  return null;
}
