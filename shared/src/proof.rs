//! The green-proof chain: one link per credited task, each hashing the one before.
//!
//! Canonical encoding (version `kgp1`), the UTF-8 bytes of the fields joined by `|`:
//!
//! ```text
//! kgp1|seq|task_id|node_id|energy_uwh|solar_uwh|carbon_ng|value_peur|created_at|difficulty|prev_hash|nonce
//! ```
//!
//! - integers in base 10 without leading zeros or sign (all are non-negative);
//! - ids as lowercase hyphenated UUIDs;
//! - `created_at` in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (exactly six fractional digits);
//! - `prev_hash` as 64 lowercase hex digits; the first link's is 64 zeros.
//!
//! `hash` is the lowercase hex SHA-256 of that encoding, and must start with `difficulty` zero
//! bits (a light proof of work: the orchestrator increments `nonce` from 0 until it does).

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::carbon::{MicroWattHours, Nanograms, PicoEuros};
use crate::ids::{NodeId, TaskId};

pub const ENCODING_VERSION: &str = "kgp1";
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Above this a link would take seconds to mine on a Pi-class verifier.
pub const MAX_DIFFICULTY: u8 = 24;

/// What a link records, before it is mined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofDraft {
    pub seq: i64,
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub energy: MicroWattHours,
    pub solar: MicroWattHours,
    pub carbon: Nanograms,
    pub value: PicoEuros,
    pub created_at: DateTime<Utc>,
    pub difficulty: u8,
    pub prev_hash: String,
}

/// A mined link, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofLink {
    #[serde(flatten)]
    pub draft: ProofDraft,
    pub nonce: i64,
    pub hash: String,
}

/// Formats a timestamp the canonical way (microseconds, UTC, `Z`).
pub fn canonical_time(at: DateTime<Utc>) -> String {
    let mut text = String::with_capacity(27);
    write_canonical_time(&mut text, at);
    text
}

/// Appends the canonical form of a timestamp (verifiers format one per leaf: this writes the
/// fields directly instead of interpreting a format string).
pub fn write_canonical_time(out: &mut String, at: DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    let micros = at.timestamp_subsec_micros().min(999_999);
    write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        at.year(),
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
    .expect("writing to a string does not fail");
}

/// Truncates a timestamp to what PostgreSQL keeps (microseconds), so a stored link re-encodes
/// to the same bytes.
pub fn storable_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

pub fn canonical_encoding(draft: &ProofDraft, nonce: i64) -> String {
    format!("{}{nonce}", encoding_prefix(draft))
}

/// The encoding up to the nonce (everything but the nonce's digits).
fn encoding_prefix(draft: &ProofDraft) -> String {
    format!(
        "{ENCODING_VERSION}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|",
        draft.seq,
        draft.task_id,
        draft.node_id,
        draft.energy.0,
        draft.solar.0,
        draft.carbon.0,
        draft.value.0,
        canonical_time(draft.created_at),
        draft.difficulty,
        draft.prev_hash,
    )
}

fn digest(draft: &ProofDraft, nonce: i64) -> [u8; 32] {
    Sha256::digest(canonical_encoding(draft, nonce).as_bytes()).into()
}

pub fn leading_zero_bits(bytes: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in bytes {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

/// Finds the first nonce whose hash meets the draft's difficulty.
pub fn mine(draft: ProofDraft) -> ProofLink {
    debug_assert!(draft.difficulty <= MAX_DIFFICULTY);
    let (nonce, hash) = mine_line(&encoding_prefix(&draft), draft.difficulty);
    debug_assert_eq!(hash, digest(&draft, nonce));
    ProofLink { draft, nonce, hash: hex::encode(hash) }
}

/// The first nonce (from 0) such that `SHA-256(prefix ‖ nonce in decimal)` has `difficulty`
/// leading zero bits, with that hash. The hash state after the prefix is computed once; each
/// attempt only adds the nonce's digits.
pub fn mine_line(prefix: &str, difficulty: u8) -> (i64, [u8; 32]) {
    let mut state = Sha256::new();
    state.update(prefix.as_bytes());
    let mut digits = String::with_capacity(20);
    let mut nonce = 0_i64;
    loop {
        use std::fmt::Write;
        digits.clear();
        write!(digits, "{nonce}").expect("writing to a string does not fail");
        let mut attempt = state.clone();
        attempt.update(digits.as_bytes());
        let hash: [u8; 32] = attempt.finalize().into();
        if leading_zero_bits(&hash) >= u32::from(difficulty) {
            return (nonce, hash);
        }
        nonce += 1;
    }
}

/// The outcome of checking a chain from its first link (and, since v2, its blocks: see
/// [`crate::blocks::ChainAudit`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainVerdict {
    pub valid: bool,
    /// `kgp1` links verified.
    pub length: u64,
    /// The hash of the last block verified (of the last link before any block).
    pub head_hash: String,
    pub first_invalid_seq: Option<i64>,
    pub reason: Option<String>,
    /// `kgp2` blocks and leaves verified, and the height of the last block verified.
    #[serde(default)]
    pub blocks: u64,
    #[serde(default)]
    pub leaves: u64,
    #[serde(default)]
    pub head_height: Option<i64>,
    /// The first block that does not hold, and the leaf at fault when it can be named.
    #[serde(default)]
    pub first_invalid_block: Option<i64>,
    #[serde(default)]
    pub first_invalid_leaf: Option<i64>,
}

/// Walks the chain in order and stops at the first link that does not hold. `min_difficulty`
/// refuses links mined more cheaply than the deployment requires.
pub struct ChainVerifier {
    min_difficulty: u8,
    expected_seq: i64,
    prev_hash: String,
    broken: Option<(i64, String)>,
}

impl ChainVerifier {
    pub fn new(min_difficulty: u8) -> Self {
        Self { min_difficulty, expected_seq: 1, prev_hash: GENESIS_HASH.to_owned(), broken: None }
    }

    /// Whether every link so far holds.
    pub fn intact(&self) -> bool {
        self.broken.is_none()
    }

    /// The hash of the last link that holds (the genesis hash before the first).
    pub fn head_hash(&self) -> &str {
        &self.prev_hash
    }

    /// Checks the next link; returns false once the chain is broken (later links are not read).
    pub fn push(&mut self, link: &ProofLink) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let seq = link.draft.seq;
        let problem = if seq != self.expected_seq {
            Some(format!("expected seq {} here, found seq {seq}", self.expected_seq))
        } else if link.draft.prev_hash != self.prev_hash {
            Some("prev_hash does not match the previous link's hash".to_owned())
        } else if link.draft.difficulty < self.min_difficulty {
            Some(format!("difficulty {} is below the required {}", link.draft.difficulty, self.min_difficulty))
        } else {
            let recomputed = digest(&link.draft, link.nonce);
            if hex::encode(recomputed) != link.hash {
                Some("hash does not match the link's contents".to_owned())
            } else if leading_zero_bits(&recomputed) < u32::from(link.draft.difficulty) {
                Some("hash does not meet the difficulty".to_owned())
            } else {
                None
            }
        };
        match problem {
            Some(reason) => {
                // A missing link shows up as the next link's wrong seq; report the seq that was due.
                let at = if seq > self.expected_seq { self.expected_seq } else { seq };
                self.broken = Some((at, reason));
                false
            }
            None => {
                self.expected_seq += 1;
                self.prev_hash = link.hash.clone();
                true
            }
        }
    }

    pub fn finish(self) -> ChainVerdict {
        let length = (self.expected_seq - 1) as u64;
        let (valid, first_invalid_seq, reason) = match self.broken {
            None => (true, None, None),
            Some((seq, reason)) => (false, Some(seq), Some(reason)),
        };
        ChainVerdict {
            valid,
            length,
            head_hash: self.prev_hash,
            first_invalid_seq,
            reason,
            blocks: 0,
            leaves: 0,
            head_height: None,
            first_invalid_block: None,
            first_invalid_leaf: None,
        }
    }
}

/// Verifies a whole chain held in memory.
pub fn verify_chain<'a>(links: impl IntoIterator<Item = &'a ProofLink>, min_difficulty: u8) -> ChainVerdict {
    let mut verifier = ChainVerifier::new(min_difficulty);
    for link in links {
        if !verifier.push(link) {
            break;
        }
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(length: i64, difficulty: u8) -> Vec<ProofLink> {
        let mut links: Vec<ProofLink> = Vec::new();
        for seq in 1..=length {
            let prev_hash = links.last().map_or(GENESIS_HASH.to_owned(), |link| link.hash.clone());
            links.push(mine(ProofDraft {
                seq,
                task_id: TaskId::new(),
                node_id: NodeId::new(),
                energy: MicroWattHours(100_000_000),
                solar: MicroWattHours(60_000_000),
                carbon: Nanograms(10_800_000_000),
                value: PicoEuros(270_000_000),
                created_at: storable_time(Utc::now()),
                difficulty,
                prev_hash,
            }));
        }
        links
    }

    #[test]
    fn canonical_times_have_six_fractional_digits_in_utc() {
        let at: DateTime<Utc> = "2026-01-02T03:04:05.000007Z".parse().unwrap();
        assert_eq!(canonical_time(at), "2026-01-02T03:04:05.000007Z");
        assert_eq!(canonical_time(at), at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
        let whole: DateTime<Utc> = "2026-11-30T23:59:59Z".parse().unwrap();
        assert_eq!(canonical_time(whole), "2026-11-30T23:59:59.000000Z");
    }

    #[test]
    fn mined_links_meet_their_difficulty() {
        for link in chain(5, 10) {
            assert!(link.hash.starts_with("00"), "{}", link.hash);
            assert_eq!(hex::decode(&link.hash).map(|bytes| leading_zero_bits(&bytes) >= 10), Ok(true));
        }
    }

    #[test]
    fn the_encoding_is_the_documented_one() {
        let draft = ProofDraft {
            seq: 1,
            task_id: TaskId(uuid::Uuid::nil()),
            node_id: NodeId(uuid::Uuid::nil()),
            energy: MicroWattHours(5),
            solar: MicroWattHours(3),
            carbon: Nanograms(540),
            value: PicoEuros(13),
            created_at: "2026-01-02T03:04:05.123456Z".parse().unwrap(),
            difficulty: 0,
            prev_hash: GENESIS_HASH.to_owned(),
        };
        let nil = "00000000-0000-0000-0000-000000000000";
        assert_eq!(
            canonical_encoding(&draft, 7),
            format!("kgp1|1|{nil}|{nil}|5|3|540|13|2026-01-02T03:04:05.123456Z|0|{GENESIS_HASH}|7")
        );
        // Difficulty 0: the first nonce is taken, and the hash is plain SHA-256 of the line.
        let link = mine(draft.clone());
        assert_eq!(link.nonce, 0);
        assert_eq!(link.hash, hex::encode(Sha256::digest(canonical_encoding(&draft, 0).as_bytes())));
    }

    #[test]
    fn an_intact_chain_verifies() {
        let links = chain(4, 4);
        let verdict = verify_chain(&links, 4);
        assert!(verdict.valid);
        assert_eq!(verdict.length, 4);
        assert_eq!(verdict.head_hash, links[3].hash);
        assert_eq!(verify_chain(&[], 4).head_hash, GENESIS_HASH);
    }

    #[test]
    fn tampering_is_found_at_the_edited_link() {
        let mut links = chain(5, 4);
        links[2].draft.solar = MicroWattHours(61_000_000);
        let verdict = verify_chain(&links, 4);
        assert_eq!((verdict.valid, verdict.first_invalid_seq), (false, Some(3)));
        assert_eq!(verdict.length, 2);
    }

    #[test]
    fn a_deleted_link_is_found_where_it_was() {
        let mut links = chain(5, 4);
        links.remove(1);
        assert_eq!(verify_chain(&links, 4).first_invalid_seq, Some(2));
    }

    #[test]
    fn swapped_links_are_found() {
        let mut links = chain(5, 4);
        links.swap(1, 3);
        assert_eq!(verify_chain(&links, 4).first_invalid_seq, Some(2));
    }

    #[test]
    fn a_cheaper_difficulty_than_required_is_refused() {
        let links = chain(2, 2);
        let verdict = verify_chain(&links, 4);
        assert_eq!(verdict.first_invalid_seq, Some(1));
    }
}
