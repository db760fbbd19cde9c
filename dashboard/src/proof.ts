// An inclusion proof checked in the browser with WebCrypto's SHA-256 (README "Auditing"):
// a kgp3 leaf's credit follows from the carbon signal and rates it records, the leaf line
// hashes to the leaf hash (RFC 6962: SHA-256(0x00 ‖ line)), the audit path leads to the block
// line's Merkle root, the block line hashes to the block's hash, which has the block's
// difficulty in leading zero bits.

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

/** `null` when a leaf line's figures follow from what it records, else why not. A `kgp3` line:
 * `kgp3-leaf|task|node|attempt|energy_uwh|solar_uwh|zone|hour|intensity_mg_per_kwh|kind|source|
 * price_peur_per_kg|node_share_percent|carbon_ng|node_peur|cooperative_peur|credited_at`;
 * a `kgp2` line (credited at the then fixed intensity) records no inputs to recompute. */
export function recomputeLeaf(line: string): string | null {
  const fields = line.split("|");
  if (fields[0] === "kgp2-leaf") return fields.length === 10 ? null : "the kgp2 leaf line does not have 10 fields";
  if (fields[0] !== "kgp3-leaf" || fields.length !== 17) return "the leaf line is neither a kgp2 nor a kgp3 line";
  const number = (index: number) => (/^[0-9]+$/.test(fields[index]) ? BigInt(fields[index]) : null);
  const [solar, mg, price, percent, carbon, node, cooperative] = [5, 8, 11, 12, 13, 14, 15].map(number);
  if ([solar, mg, price, percent, carbon, node, cooperative].some((value) => value === null)) return "a figure of the leaf is not a whole number";
  const expectedCarbon = (solar! * mg!) / 1000n;
  const total = (expectedCarbon * price!) / 1_000_000_000_000n;
  const expectedNode = (total * percent!) / 100n;
  if (carbon !== expectedCarbon) return `the leaf's CO₂ (${carbon} ng) is not its sun × intensity (${expectedCarbon} ng)`;
  if (node !== expectedNode || cooperative !== total - expectedNode) return "the leaf's shares are not its rule's split of its CO₂'s value";
  return null;
}

/** `null` when the proof holds, else why it does not. */
export async function verifyInclusion(proof: Inclusion): Promise<string | null> {
  if (proof.status !== "sealed" || !proof.block || proof.tree_size == null) return "not sealed yet";
  const misreckoned = recomputeLeaf(proof.leaf_line);
  if (misreckoned) return misreckoned;
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
