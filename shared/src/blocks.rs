//! The green-proof chain in blocks (version `kgp2`, DESIGN §10): each credited result is a
//! *leaf*; a *block* seals a batch of leaves under their RFC 6962 Merkle root and chains onto
//! the block before it (the first block onto the last `kgp1` link, see [`crate::proof`]).
//!
//! Leaf line, the UTF-8 bytes of (since carbon signals, version `kgp3-leaf`):
//!
//! ```text
//! kgp3-leaf|task_id|node_id|attempt|energy_uwh|solar_uwh|zone|hour|intensity_mg_per_kwh|intensity_kind|
//!     intensity_source|price_peur_per_kg|node_share_percent|carbon_ng|node_peur|cooperative_peur|credited_at
//! ```
//!
//! (one line, no break), whose figures follow from its inputs by the rule of
//! [`crate::carbon`], so that anyone can recompute the credit from the leaf alone:
//! `carbon_ng = solar_uwh × intensity_mg_per_kwh ÷ 1000`, `total = carbon_ng ×
//! price_peur_per_kg ÷ 10¹²`, `node_peur = total × node_share_percent ÷ 100`,
//! `cooperative_peur = total − node_peur` (each division rounding down). Leaves credited before
//! signals keep version `kgp2-leaf|task_id|node_id|attempt|energy_uwh|solar_uwh|carbon_ng|
//! node_peur|cooperative_peur|credited_at` (at the then fixed intensity) and verify beside them.
//! Leaf hash `SHA-256(0x00 ‖ line)`. Block line:
//!
//! ```text
//! kgp2|height|prev_hash|merkle_root|leaf_count|sealed_at|difficulty|nonce
//! ```
//!
//! and block hash `SHA-256(line)`, which must start with `difficulty` zero bits (the proof of
//! work is paid once per block). Ids are lowercase hyphenated UUIDs, integers are decimal,
//! times are RFC 3339 UTC with exactly six fractional digits, hashes are 64 lowercase hex
//! digits. Heights count from 1.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::carbon::{CarbonPolicy, CreditSplit, MicroWattHours, Nanograms, PicoEuros};
use crate::ids::{NodeId, TaskId};
use crate::merkle::{self, Hash};
use crate::proof::{
    ChainVerdict, ChainVerifier, ProofLink, canonical_time, leading_zero_bits, mine_line, write_canonical_time,
};
use crate::signals::{IntensityKind, Signal, SourceName, Zone};

/// The leaf version of credits that record their carbon signal.
pub const LEAF_VERSION: &str = "kgp3-leaf";
/// The leaf version of credits made at the one fixed intensity, before signals.
pub const LEAF_VERSION_FIXED: &str = "kgp2-leaf";
pub const BLOCK_VERSION: &str = "kgp2";

/// One credited result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaf {
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub attempt: i32,
    pub energy: MicroWattHours,
    pub solar: MicroWattHours,
    pub carbon: Nanograms,
    pub node_share: PicoEuros,
    pub cooperative_share: PicoEuros,
    pub credited_at: DateTime<Utc>,
    /// What the credit was computed from (`kgp3`); absent in `kgp2` leaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<CreditBasis>,
}

/// What a credit was computed from: the carbon signal of the node's zone and hour, and the
/// rates of the rule that priced it. With the leaf's solar energy, it gives the leaf's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditBasis {
    pub zone: Zone,
    pub hour: DateTime<Utc>,
    pub intensity_mg_per_kwh: i64,
    pub intensity_kind: IntensityKind,
    pub intensity_source: SourceName,
    pub price_peur_per_kg: i64,
    pub node_share_percent: u8,
}

impl CreditBasis {
    pub fn new(signal: &Signal, policy: &CarbonPolicy) -> Self {
        Self {
            zone: signal.zone.clone(),
            hour: signal.hour,
            intensity_mg_per_kwh: signal.intensity_mg_per_kwh,
            intensity_kind: signal.kind,
            intensity_source: signal.source.clone(),
            price_peur_per_kg: policy.price_pico_eur_per_kg,
            node_share_percent: policy.node_share_percent,
        }
    }

    /// The credit these inputs give for `solar`.
    pub fn split(&self, solar: MicroWattHours) -> CreditSplit {
        let policy = CarbonPolicy {
            grid_intensity_mg_per_kwh: self.intensity_mg_per_kwh,
            price_pico_eur_per_kg: self.price_peur_per_kg,
            node_share_percent: self.node_share_percent,
        };
        policy.credit_at(solar, self.intensity_mg_per_kwh)
    }

    /// Rebuilds a basis from its stored columns (all present for a `kgp3` leaf, all absent for
    /// a `kgp2` one).
    #[allow(clippy::too_many_arguments)]
    pub fn from_columns(
        zone: Option<String>,
        hour: Option<DateTime<Utc>>,
        intensity_mg_per_kwh: Option<i64>,
        intensity_kind: Option<String>,
        intensity_source: Option<String>,
        price_peur_per_kg: Option<i64>,
        node_share_percent: Option<i16>,
    ) -> Result<Option<Self>, String> {
        let (Some(zone), Some(hour), Some(intensity), Some(kind), Some(source), Some(price), Some(percent)) =
            (zone, hour, intensity_mg_per_kwh, intensity_kind, intensity_source, price_peur_per_kg, node_share_percent)
        else {
            return Ok(None);
        };
        Ok(Some(Self {
            zone: Zone::parse(&zone).map_err(|error| error.reason)?,
            hour,
            intensity_mg_per_kwh: intensity,
            intensity_kind: IntensityKind::parse(&kind).ok_or_else(|| format!("{kind:?} is not an intensity kind"))?,
            intensity_source: SourceName::parse(&source)?,
            price_peur_per_kg: price,
            node_share_percent: u8::try_from(percent).map_err(|_| format!("{percent} is not a percentage"))?,
        }))
    }
}

/// A `proof_leaf` row as its readers select it, each with `sqlx::query_as!(LeafRow, ...)`
/// (checked against the schema when they compile); [`LeafRow::stored`] makes it a leaf.
#[derive(Debug, Clone)]
pub struct LeafRow {
    pub cell_id: String,
    pub block_height: i64,
    pub leaf_index: i32,
    pub task_id: uuid::Uuid,
    pub node_id: uuid::Uuid,
    pub attempt: i32,
    pub energy_uwh: i64,
    pub solar_uwh: i64,
    pub carbon_ng: i64,
    pub node_peur: i64,
    pub cooperative_peur: i64,
    pub credited_at: DateTime<Utc>,
    pub leaf_hash: String,
    pub zone: Option<String>,
    pub intensity_hour: Option<DateTime<Utc>>,
    pub intensity_mg_per_kwh: Option<i64>,
    pub intensity_kind: Option<String>,
    pub intensity_source: Option<String>,
    pub price_peur_per_kg: Option<i64>,
    pub node_share_percent: Option<i16>,
}

impl LeafRow {
    /// The leaf this row stores; `Err` names what in its basis does not parse.
    pub fn stored(self) -> Result<StoredLeaf, String> {
        let basis = CreditBasis::from_columns(
            self.zone,
            self.intensity_hour,
            self.intensity_mg_per_kwh,
            self.intensity_kind,
            self.intensity_source,
            self.price_peur_per_kg,
            self.node_share_percent,
        )
        .map_err(|reason| format!("proof_leaf basis: {reason}"))?;
        Ok(StoredLeaf {
            leaf_index: i64::from(self.leaf_index),
            leaf: Leaf {
                task_id: TaskId(self.task_id),
                node_id: NodeId(self.node_id),
                attempt: self.attempt,
                energy: MicroWattHours(self.energy_uwh),
                solar: MicroWattHours(self.solar_uwh),
                carbon: Nanograms(self.carbon_ng),
                node_share: PicoEuros(self.node_peur),
                cooperative_share: PicoEuros(self.cooperative_peur),
                credited_at: self.credited_at,
                basis,
            },
            leaf_hash: self.leaf_hash,
        })
    }
}

/// A `proof_block` row as its readers select it (`sqlx::query_as!(BlockRow, ...)`).
#[derive(Debug, Clone)]
pub struct BlockRow {
    pub height: i64,
    pub prev_hash: String,
    pub merkle_root: String,
    pub leaf_count: i32,
    pub sealed_at: DateTime<Utc>,
    pub difficulty: i16,
    pub nonce: i64,
    pub hash: String,
}

impl From<BlockRow> for Block {
    fn from(row: BlockRow) -> Self {
        Block {
            draft: BlockDraft {
                height: row.height,
                prev_hash: row.prev_hash,
                merkle_root: row.merkle_root,
                leaf_count: i64::from(row.leaf_count),
                sealed_at: row.sealed_at,
                // The column's check keeps it within 0..=64.
                difficulty: u8::try_from(row.difficulty).unwrap_or(u8::MAX),
            },
            nonce: row.nonce,
            hash: row.hash,
        }
    }
}

impl Leaf {
    pub fn line(&self) -> String {
        let mut line = String::with_capacity(256);
        self.write_line(&mut line);
        line
    }

    /// Appends the leaf line to `out` (a verifier reuses one buffer for every leaf).
    pub fn write_line(&self, out: &mut String) {
        use std::fmt::Write;
        let (task, node, attempt, energy, solar) =
            (self.task_id, self.node_id, self.attempt, self.energy.0, self.solar.0);
        let written = match &self.basis {
            None => write!(out, "{LEAF_VERSION_FIXED}|{task}|{node}|{attempt}|{energy}|{solar}|"),
            Some(basis) => write!(out, "{LEAF_VERSION}|{task}|{node}|{attempt}|{energy}|{solar}|{}|", basis.zone)
                .and_then(|()| {
                    write_canonical_time(out, basis.hour);
                    write!(
                        out,
                        "|{}|{}|{}|{}|{}|",
                        basis.intensity_mg_per_kwh,
                        basis.intensity_kind.as_str(),
                        basis.intensity_source,
                        basis.price_peur_per_kg,
                        basis.node_share_percent
                    )
                }),
        };
        written
            .and_then(|()| write!(out, "{}|{}|{}|", self.carbon.0, self.node_share.0, self.cooperative_share.0))
            .expect("writing to a string does not fail");
        write_canonical_time(out, self.credited_at);
    }

    /// Why the leaf's figures do not follow from its basis, when they do not (`kgp2` leaves
    /// carry no basis and are not recomputed).
    pub fn misreckoned(&self) -> Option<String> {
        let basis = self.basis.as_ref()?;
        let expected = basis.split(self.solar);
        let recorded = (self.carbon, self.node_share, self.cooperative_share);
        (recorded != (expected.carbon_saved, expected.node_share, expected.cooperative_share)).then(|| {
            format!(
                "the credit does not follow from its basis: {} ng, {} + {} p€ recorded, {} ng, {} + {} p€ recomputed",
                self.carbon.0,
                self.node_share.0,
                self.cooperative_share.0,
                expected.carbon_saved.0,
                expected.node_share.0,
                expected.cooperative_share.0
            )
        })
    }

    pub fn hash(&self) -> Hash {
        merkle::leaf_hash(self.line().as_bytes())
    }
}

/// What a block records, before it is mined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDraft {
    pub height: i64,
    pub prev_hash: String,
    pub merkle_root: String,
    pub leaf_count: i64,
    pub sealed_at: DateTime<Utc>,
    pub difficulty: u8,
}

/// A mined block, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    #[serde(flatten)]
    pub draft: BlockDraft,
    pub nonce: i64,
    pub hash: String,
}

impl BlockDraft {
    /// The draft of the block sealing `leaves` (their hashes, in order) after `prev_hash`.
    pub fn of_leaves(height: i64, prev_hash: &str, leaves: &[Hash], sealed_at: DateTime<Utc>, difficulty: u8) -> Self {
        Self {
            height,
            prev_hash: prev_hash.to_owned(),
            merkle_root: hex::encode(merkle::root(leaves)),
            leaf_count: i64::try_from(leaves.len()).unwrap_or(i64::MAX),
            sealed_at,
            difficulty,
        }
    }

    fn prefix(&self) -> String {
        format!(
            "{BLOCK_VERSION}|{}|{}|{}|{}|{}|{}|",
            self.height,
            self.prev_hash,
            self.merkle_root,
            self.leaf_count,
            canonical_time(self.sealed_at),
            self.difficulty
        )
    }

    /// The block line with this nonce.
    pub fn line(&self, nonce: i64) -> String {
        format!("{}{nonce}", self.prefix())
    }

    /// Finds the first nonce whose block hash has `difficulty` leading zero bits.
    pub fn mine(self) -> Block {
        let (nonce, hash) = mine_line(&self.prefix(), self.difficulty);
        Block { draft: self, nonce, hash: hex::encode(hash) }
    }
}

impl Block {
    pub fn line(&self) -> String {
        self.draft.line(self.nonce)
    }
}

/// A leaf as stored: its position and the hash recorded with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLeaf {
    pub leaf_index: i64,
    #[serde(flatten)]
    pub leaf: Leaf,
    pub leaf_hash: String,
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockBreak {
    pub height: i64,
    /// The leaf at fault, when it can be named (an edited leaf, a missing one).
    pub leaf_index: Option<i64>,
    pub reason: String,
}

/// Checks blocks in height order after the v1 links, and stops at the first that does not
/// hold: its height, its link to the previous hash, its difficulty, each leaf against the hash
/// recorded with it and its place, the Merkle root of the leaves, and the block's own hash.
pub struct BlockVerifier {
    min_difficulty: u8,
    expected_height: i64,
    prev_hash: String,
    leaves: u64,
    broken: Option<BlockBreak>,
}

impl BlockVerifier {
    /// `prev_hash`: the hash the first block must chain onto (the last `kgp1` link's, or the
    /// genesis hash when there is none).
    pub fn new(min_difficulty: u8, prev_hash: &str) -> Self {
        Self { min_difficulty, expected_height: 1, prev_hash: prev_hash.to_owned(), leaves: 0, broken: None }
    }

    /// Checks the next block with its leaves (in leaf order); false once the chain is broken.
    pub fn push(&mut self, block: &Block, leaves: &[StoredLeaf]) -> bool {
        if self.broken.is_some() {
            return false;
        }
        match check_block(block, leaves, self.expected_height, &self.prev_hash, self.min_difficulty) {
            Err((height, leaf_index, reason)) => {
                self.broken = Some(BlockBreak { height, leaf_index, reason });
                false
            }
            Ok(()) => {
                self.expected_height += 1;
                self.prev_hash = block.hash.clone();
                self.leaves += leaves.len() as u64;
                true
            }
        }
    }

    /// (blocks verified, leaves verified, head hash, where it broke).
    pub fn finish(self) -> (u64, u64, String, Option<BlockBreak>) {
        (u64::try_from(self.expected_height - 1).unwrap_or(0), self.leaves, self.prev_hash, self.broken)
    }
}

type Failure = (i64, Option<i64>, String);

fn check_block(
    block: &Block,
    leaves: &[StoredLeaf],
    expected_height: i64,
    prev_hash: &str,
    min_difficulty: u8,
) -> Result<(), Failure> {
    let draft = &block.draft;
    let at = |reason: String| (expected_height.min(draft.height), None, reason);
    if draft.height != expected_height {
        return Err(at(format!("expected block {expected_height} here, found block {}", draft.height)));
    }
    if draft.prev_hash != prev_hash {
        return Err(at("prev_hash does not match the previous block's hash".to_owned()));
    }
    if draft.difficulty < min_difficulty {
        return Err(at(format!("difficulty {} is below the required {min_difficulty}", draft.difficulty)));
    }
    let mut hashes = Vec::with_capacity(leaves.len());
    let mut line = String::with_capacity(200);
    for (position, stored) in leaves.iter().enumerate() {
        let position = i64::try_from(position).unwrap_or(i64::MAX);
        if stored.leaf_index != position {
            let reason = if stored.leaf_index > position {
                format!("leaf {position} is missing")
            } else {
                format!("leaf {} appears twice", stored.leaf_index)
            };
            return Err((draft.height, Some(position), reason));
        }
        line.clear();
        stored.leaf.write_line(&mut line);
        let hash = merkle::leaf_hash(line.as_bytes());
        let mut recorded = [0_u8; 32];
        if hex::decode_to_slice(&stored.leaf_hash, &mut recorded).is_err() || recorded != hash {
            return Err((draft.height, Some(position), "the leaf does not match its hash".to_owned()));
        }
        if let Some(reason) = stored.leaf.misreckoned() {
            return Err((draft.height, Some(position), reason));
        }
        hashes.push(hash);
    }
    if i64::try_from(leaves.len()).unwrap_or(i64::MAX) != draft.leaf_count {
        let missing = i64::try_from(leaves.len()).unwrap_or(i64::MAX);
        let leaf = (missing < draft.leaf_count).then_some(missing);
        return Err((draft.height, leaf, format!("{} leaves, the block counts {}", leaves.len(), draft.leaf_count)));
    }
    if hex::encode(merkle::root(&hashes)) != draft.merkle_root {
        return Err(at("the Merkle root does not match the leaves (edited, reordered or replaced)".to_owned()));
    }
    let recomputed: [u8; 32] = Sha256::digest(block.line().as_bytes()).into();
    if hex::encode(recomputed) != block.hash {
        return Err(at("hash does not match the block's contents".to_owned()));
    }
    if leading_zero_bits(&recomputed) < u32::from(draft.difficulty) {
        return Err(at("hash does not meet the difficulty".to_owned()));
    }
    Ok(())
}

/// Verifies a whole chain: the `kgp1` links in seq order, then the `kgp2` blocks in height
/// order, the first block chaining onto the last link.
pub struct ChainAudit {
    min_difficulty: u8,
    links: ChainVerifier,
    blocks: Option<BlockVerifier>,
}

impl ChainAudit {
    pub fn new(min_difficulty: u8) -> Self {
        Self { min_difficulty, links: ChainVerifier::new(min_difficulty), blocks: None }
    }

    /// The next `kgp1` link; false once the chain is broken.
    pub fn push_link(&mut self, link: &ProofLink) -> bool {
        if self.blocks.is_some() {
            return false;
        }
        self.links.push(link)
    }

    /// The next block with its leaves; false once the chain is broken.
    pub fn push_block(&mut self, block: &Block, leaves: &[StoredLeaf]) -> bool {
        if self.blocks.is_none() {
            if !self.links.intact() {
                return false;
            }
            self.blocks = Some(BlockVerifier::new(self.min_difficulty, self.links.head_hash()));
        }
        self.blocks.as_mut().is_some_and(|blocks| blocks.push(block, leaves))
    }

    pub fn finish(self) -> ChainVerdict {
        let mut verdict = self.links.finish();
        if let Some(blocks) = self.blocks {
            let (count, leaves, head_hash, broken) = blocks.finish();
            verdict.blocks = count;
            verdict.leaves = leaves;
            verdict.head_height = (count > 0).then_some(i64::try_from(count).unwrap_or(i64::MAX));
            verdict.head_hash = head_hash;
            if let Some(broken) = broken {
                verdict.valid = false;
                verdict.first_invalid_block = Some(broken.height);
                verdict.first_invalid_leaf = broken.leaf_index;
                verdict.reason = Some(broken.reason);
            }
        }
        verdict
    }
}

/// An inclusion proof of one leaf: the leaf, its place, the audit path and the block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub leaf_line: String,
    pub leaf_hash: String,
    pub leaf_index: u64,
    pub tree_size: u64,
    pub audit_path: Vec<String>,
    pub block_line: String,
    pub block_hash: String,
}

impl InclusionProof {
    /// Checks leaf → root → block: the leaf's hash, the root its path implies, the block line
    /// that names that root, the block's hash and its work. (The block's place in the chain is
    /// checked by verifying the chain.)
    pub fn verify(&self) -> Result<(), String> {
        let leaf_hash = merkle::leaf_hash(self.leaf_line.as_bytes());
        if hex::encode(leaf_hash) != self.leaf_hash {
            return Err("the leaf line does not hash to the leaf hash".to_owned());
        }
        let path = self
            .audit_path
            .iter()
            .map(|text| hex::decode(text).ok().and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()))
            .collect::<Option<Vec<Hash>>>()
            .ok_or("the audit path holds something other than 32-byte hex hashes")?;
        let root = merkle::root_from_path(&leaf_hash, self.leaf_index, self.tree_size, &path)
            .ok_or("the audit path does not fit the leaf's index and the tree's size")?;
        let fields: Vec<&str> = self.block_line.split('|').collect();
        let [version, _height, _prev, merkle_root, leaf_count, _sealed_at, difficulty, _nonce] = fields[..] else {
            return Err("the block line does not have eight fields".to_owned());
        };
        if version != BLOCK_VERSION {
            return Err(format!("the block line is not {BLOCK_VERSION}"));
        }
        if merkle_root != hex::encode(root) {
            return Err("the root the path implies is not the block's".to_owned());
        }
        if leaf_count != self.tree_size.to_string() {
            return Err("the tree size is not the block's leaf count".to_owned());
        }
        let block_hash: [u8; 32] = Sha256::digest(self.block_line.as_bytes()).into();
        if hex::encode(block_hash) != self.block_hash {
            return Err("the block line does not hash to the block hash".to_owned());
        }
        let difficulty: u32 = difficulty.parse().map_err(|_| "the block's difficulty is not a number")?;
        if leading_zero_bits(&block_hash) < difficulty {
            return Err("the block hash does not meet its difficulty".to_owned());
        }
        Ok(())
    }
}

/// The inclusion proof of leaf `index` among a block's leaves.
pub fn inclusion_proof(block: &Block, leaves: &[Leaf], index: usize) -> Option<InclusionProof> {
    let hashes: Vec<Hash> = leaves.iter().map(Leaf::hash).collect();
    let path = merkle::audit_path(&hashes, index)?;
    Some(InclusionProof {
        leaf_line: leaves[index].line(),
        leaf_hash: hex::encode(hashes[index]),
        leaf_index: index as u64,
        tree_size: hashes.len() as u64,
        audit_path: path.iter().map(hex::encode).collect(),
        block_line: block.line(),
        block_hash: block.hash.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::{GENESIS_HASH, storable_time};

    fn leaf(index: u32) -> Leaf {
        Leaf {
            task_id: TaskId(uuid::Uuid::from_u128(u128::from(index) + 1)),
            node_id: NodeId(uuid::Uuid::from_u128(7)),
            attempt: 1,
            energy: MicroWattHours(100_000 + i64::from(index)),
            solar: MicroWattHours(60_000),
            carbon: Nanograms(10_800_000),
            node_share: PicoEuros(189_000),
            cooperative_share: PicoEuros(81_000),
            credited_at: "2026-11-30T12:00:00.000001Z".parse().unwrap(),
            basis: None,
        }
    }

    /// A leaf credited at the signal of its zone and hour: 60 mWh of solar in DE at 412.5 g/kWh.
    fn signal_leaf(index: u32) -> Leaf {
        let basis = CreditBasis {
            zone: Zone::parse("DE").unwrap(),
            hour: "2026-11-30T11:00:00Z".parse().unwrap(),
            intensity_mg_per_kwh: 412_500,
            intensity_kind: IntensityKind::Average,
            intensity_source: SourceName::parse("file:carbon-intensity-synthetic-2026.csv:lifecycle").unwrap(),
            price_peur_per_kg: 25_000_000_000,
            node_share_percent: 70,
        };
        let split = basis.split(MicroWattHours(60_000));
        Leaf {
            carbon: split.carbon_saved,
            node_share: split.node_share,
            cooperative_share: split.cooperative_share,
            basis: Some(basis),
            ..leaf(index)
        }
    }

    fn stored(leaves: &[Leaf]) -> Vec<StoredLeaf> {
        leaves
            .iter()
            .enumerate()
            .map(|(index, leaf)| StoredLeaf {
                leaf_index: index as i64,
                leaf: leaf.clone(),
                leaf_hash: hex::encode(leaf.hash()),
            })
            .collect()
    }

    fn chain(blocks: usize, leaves_per_block: u32) -> Vec<(Block, Vec<StoredLeaf>)> {
        let mut prev = GENESIS_HASH.to_owned();
        (0..blocks)
            .map(|height| {
                let leaves: Vec<Leaf> = (0..leaves_per_block)
                    .map(|index| height as u32 * 1000 + index)
                    .map(|index| if index % 2 == 0 { leaf(index) } else { signal_leaf(index) })
                    .collect();
                let hashes: Vec<Hash> = leaves.iter().map(Leaf::hash).collect();
                let block =
                    BlockDraft::of_leaves(height as i64 + 1, &prev, &hashes, storable_time(Utc::now()), 6).mine();
                prev = block.hash.clone();
                (block, stored(&leaves))
            })
            .collect()
    }

    fn verify(chain: &[(Block, Vec<StoredLeaf>)]) -> Option<BlockBreak> {
        let mut verifier = BlockVerifier::new(6, GENESIS_HASH);
        for (block, leaves) in chain {
            if !verifier.push(block, leaves) {
                break;
            }
        }
        verifier.finish().3
    }

    #[test]
    fn lines_are_the_documented_ones() {
        let nil = "00000000-0000-0000-0000-000000000001";
        assert_eq!(
            leaf(0).line(),
            format!(
                "kgp2-leaf|{nil}|00000000-0000-0000-0000-000000000007|1|100000|60000|10800000|189000|81000|2026-11-30T12:00:00.000001Z"
            )
        );
        let draft =
            BlockDraft::of_leaves(1, GENESIS_HASH, &[leaf(0).hash()], "2026-11-30T12:00:01Z".parse().unwrap(), 0);
        assert_eq!(draft.merkle_root, hex::encode(leaf(0).hash()), "one leaf: the root is its hash");
        assert_eq!(
            draft.line(3),
            format!("kgp2|1|{GENESIS_HASH}|{}|1|2026-11-30T12:00:01.000000Z|0|3", draft.merkle_root)
        );
        let block = draft.clone().mine();
        assert_eq!(block.nonce, 0);
        assert_eq!(block.hash, hex::encode(Sha256::digest(draft.line(0).as_bytes())));
    }

    #[test]
    fn a_signal_leaf_line_carries_its_basis_and_its_figures_follow_from_it() {
        let nil = "00000000-0000-0000-0000-000000000002";
        let leaf = signal_leaf(1);
        // 60,000 µWh × 412,500 mg/kWh ÷ 1000 = 24,750,000 ng; × €0.025/kg = 618,750 p€; 70 % = 433,125.
        assert_eq!(
            leaf.line(),
            format!(
                "kgp3-leaf|{nil}|00000000-0000-0000-0000-000000000007|1|100001|60000|DE|2026-11-30T11:00:00.000000Z|\
                 412500|average|file:carbon-intensity-synthetic-2026.csv:lifecycle|25000000000|70|24750000|433125|185625|\
                 2026-11-30T12:00:00.000001Z"
            )
        );
        assert_eq!(leaf.misreckoned(), None);
        let inflated = Leaf { carbon: Nanograms(24_750_001), ..leaf.clone() };
        assert!(inflated.misreckoned().unwrap().contains("does not follow from its basis"));
        // A leaf whose figures were inflated, then re-hashed, is named by the verifier.
        let mut blocks = chain(2, 4);
        blocks[1].1[1].leaf.node_share = PicoEuros(blocks[1].1[1].leaf.node_share.0 * 2);
        blocks[1].1[1].leaf_hash = hex::encode(blocks[1].1[1].leaf.hash());
        let broken = verify(&blocks).unwrap();
        assert_eq!((broken.height, broken.leaf_index), (2, Some(1)));
        assert!(broken.reason.contains("does not follow from its basis"), "{}", broken.reason);
    }

    #[test]
    fn a_basis_is_all_its_columns_or_none() {
        let basis = signal_leaf(1).basis.unwrap();
        let columns = CreditBasis::from_columns(
            Some("DE".into()),
            Some(basis.hour),
            Some(412_500),
            Some("average".into()),
            Some(basis.intensity_source.to_string()),
            Some(25_000_000_000),
            Some(70),
        );
        assert_eq!(columns, Ok(Some(basis.clone())));
        assert_eq!(CreditBasis::from_columns(None, None, None, None, None, None, None), Ok(None));
        let bad_kind = CreditBasis::from_columns(
            Some("DE".into()),
            Some(basis.hour),
            Some(1),
            Some("median".into()),
            Some("fixed".into()),
            Some(1),
            Some(70),
        );
        assert!(bad_kind.is_err());
    }

    #[test]
    fn a_mined_block_meets_its_difficulty() {
        let block = BlockDraft::of_leaves(1, GENESIS_HASH, &[leaf(0).hash()], Utc::now(), 10).mine();
        assert!(leading_zero_bits(&hex::decode(&block.hash).unwrap()) >= 10);
    }

    #[test]
    fn an_intact_chain_verifies() {
        let blocks = chain(4, 5);
        assert_eq!(verify(&blocks), None);
        let mut verifier = BlockVerifier::new(6, GENESIS_HASH);
        for (block, leaves) in &blocks {
            verifier.push(block, leaves);
        }
        let (count, leaves, head, _) = verifier.finish();
        assert_eq!((count, leaves, head), (4, 20, blocks[3].0.hash.clone()));
    }

    #[test]
    fn an_edited_leaf_is_named() {
        let mut blocks = chain(3, 5);
        blocks[1].1[3].leaf.solar = MicroWattHours(60_001);
        assert_eq!(
            verify(&blocks),
            Some(BlockBreak { height: 2, leaf_index: Some(3), reason: "the leaf does not match its hash".into() })
        );
    }

    #[test]
    fn a_leaf_edited_with_its_hash_breaks_the_root() {
        // Leaf 2 is a kgp2 leaf: nothing in it to recompute, so the root is what breaks.
        let mut blocks = chain(3, 5);
        blocks[1].1[2].leaf.solar = MicroWattHours(60_001);
        blocks[1].1[2].leaf_hash = hex::encode(blocks[1].1[2].leaf.hash());
        let broken = verify(&blocks).unwrap();
        assert_eq!((broken.height, broken.leaf_index), (2, None));
        assert!(broken.reason.contains("Merkle root"));
    }

    #[test]
    fn a_deleted_leaf_is_named() {
        let mut blocks = chain(3, 5);
        blocks[2].1.remove(2);
        assert_eq!(verify(&blocks).map(|broken| (broken.height, broken.leaf_index)), Some((3, Some(2))));
        let mut blocks = chain(3, 5);
        blocks[0].1.pop();
        assert_eq!(verify(&blocks).map(|broken| (broken.height, broken.leaf_index)), Some((1, Some(4))));
    }

    #[test]
    fn swapped_leaves_break_the_root() {
        let mut blocks = chain(2, 5);
        let (first, second) = (blocks[1].1[0].clone(), blocks[1].1[4].clone());
        blocks[1].1[0] = StoredLeaf { leaf_index: 0, ..second };
        blocks[1].1[4] = StoredLeaf { leaf_index: 4, ..first };
        let broken = verify(&blocks).unwrap();
        assert_eq!(broken.height, 2);
        assert!(broken.reason.contains("Merkle root"), "{broken:?}");
    }

    #[test]
    fn an_edited_deleted_or_forged_block_is_found_where_it_is() {
        let mut blocks = chain(4, 3);
        blocks[2].0.nonce += 1;
        assert_eq!(verify(&blocks).map(|broken| broken.height), Some(3));
        let mut blocks = chain(4, 3);
        blocks.remove(1);
        let broken = verify(&blocks).unwrap();
        assert_eq!(broken.height, 2, "{broken:?}");
        // A block appended with a made-up hash.
        let mut blocks = chain(3, 3);
        let mut forged = blocks[2].clone();
        forged.0.draft.height = 4;
        forged.0.draft.prev_hash = blocks[2].0.hash.clone();
        forged.0.hash = "00".repeat(32);
        blocks.push(forged);
        assert_eq!(verify(&blocks).map(|broken| broken.height), Some(4));
    }

    #[test]
    fn an_inclusion_proof_checks_leaf_root_and_block() {
        let leaves: Vec<Leaf> = (0..2_000).map(leaf).collect();
        let hashes: Vec<Hash> = leaves.iter().map(Leaf::hash).collect();
        let block = BlockDraft::of_leaves(1, GENESIS_HASH, &hashes, Utc::now(), 6).mine();
        let proof = inclusion_proof(&block, &leaves, 1_234).unwrap();
        assert!(proof.audit_path.len() <= 11);
        assert_eq!(proof.verify(), Ok(()));
        let mut forged = proof.clone();
        forged.leaf_line = forged.leaf_line.replace("|60000|", "|60001|");
        assert!(forged.verify().is_err());
        let mut forged = proof.clone();
        forged.leaf_index = 1_235;
        assert!(forged.verify().is_err());
        let mut forged = proof;
        forged.audit_path[3] = "00".repeat(32);
        assert!(forged.verify().is_err());
    }
}
