//! Result validation by quorum, as in BOINC, decided without I/O.
//!
//! A task asks for `replicas` results (1 ..= 3), each from a node of an owner that has not run
//! it yet; it needs `quorum` (a strict majority) of them to agree on the result hash. Replicas
//! run one after another, so the task stops as soon as a hash has its quorum: two agreeing
//! results of a three-replica task complete it. When the results disagree, one more replica is
//! sent, until `result_limit` results are in; then the task fails with `no_quorum`.
//!
//! A single-replica task is checked adaptively: a node whose trust (consecutive agreeing
//! results) is below the threshold always gets a second opinion, and a trusted node's result is
//! drawn for a check at `spot_check_ppm`. Only agreeing results are credited; a disagreeing one
//! resets its node's trust to zero.

use grid_shared::events::{ReplicaNeeded, Validation};
use grid_shared::ids::NodeId;

use crate::config;

/// A result recorded for the task, in the order they came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported<'a> {
    pub node_id: NodeId,
    pub result_hash: &'a str,
}

/// What the task asked for, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    pub replicas: u8,
    pub quorum: u8,
    pub result_limit: u8,
}

/// The inputs of the adaptive check of a single-replica task's first result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleCheck {
    /// The reporting node's trust.
    pub trust: u32,
    /// A uniform draw in 0 .. 1,000,000.
    pub draw_ppm: u32,
    /// Why no second opinion can be had, when none can (no other owner has nodes, or the
    /// deadline leaves no time for one).
    pub impossible: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The task is completed with the result of `result_hash`.
    Complete { result_hash: String, validation: Validation },
    /// Another replica is needed; the requirement may have been raised by a check.
    AnotherReplica { needed: ReplicaNeeded, requirement: Requirement },
    /// `result_limit` results and no hash with a quorum.
    NoQuorum { results: usize, distinct_hashes: usize, quorum: u8 },
}

/// The hash with the most results (the earliest such on a tie) and its count.
fn leader<'a>(results: &[Reported<'a>]) -> Option<(&'a str, usize)> {
    let mut best: Option<(&str, usize)> = None;
    for (index, result) in results.iter().enumerate() {
        let count = results.iter().filter(|other| other.result_hash == result.result_hash).count();
        let first = results.iter().position(|other| other.result_hash == result.result_hash) == Some(index);
        if first && best.is_none_or(|(_, most)| count > most) {
            best = Some((result.result_hash, count));
        }
    }
    best
}

fn distinct_hashes(results: &[Reported<'_>]) -> usize {
    let mut hashes: Vec<&str> = results.iter().map(|result| result.result_hash).collect();
    hashes.sort_unstable();
    hashes.dedup();
    hashes.len()
}

/// Decides what a task does after its latest result (the last of `results`). `single` is given
/// for the first result of a single-replica task.
pub fn decide(
    requirement: Requirement,
    results: &[Reported<'_>],
    single: Option<&SingleCheck>,
    settings: &config::Validation,
) -> Outcome {
    let Some((hash, count)) = leader(results) else {
        return Outcome::NoQuorum { results: 0, distinct_hashes: 0, quorum: requirement.quorum };
    };
    let mut requirement = requirement;
    if let (Some(check), [only]) = (single, results)
        && requirement.quorum == 1
    {
        let needed = if check.trust < settings.trust_threshold {
            Some(ReplicaNeeded::UntrustedNode { trust: check.trust, threshold: settings.trust_threshold })
        } else if check.draw_ppm < settings.spot_check_ppm {
            Some(ReplicaNeeded::SpotCheck { draw_ppm: check.draw_ppm, rate_ppm: settings.spot_check_ppm })
        } else {
            None
        };
        match (needed, &check.impossible) {
            (Some(needed), None) => {
                requirement.quorum = 2;
                requirement.result_limit = 2 + settings.extra_replicas;
                return Outcome::AnotherReplica { needed, requirement };
            }
            (needed, impossible) => {
                return Outcome::Complete {
                    result_hash: only.result_hash.to_owned(),
                    validation: Validation::Unchecked {
                        trust: check.trust,
                        threshold: settings.trust_threshold,
                        draw_ppm: check.draw_ppm,
                        rate_ppm: settings.spot_check_ppm,
                        check_skipped: needed.and(impossible.clone()),
                    },
                };
            }
        }
    }
    if count >= usize::from(requirement.quorum) {
        let agreeing = results.iter().filter(|result| result.result_hash == hash).map(|result| result.node_id);
        let disagreeing = results.iter().filter(|result| result.result_hash != hash).map(|result| result.node_id);
        return Outcome::Complete {
            result_hash: hash.to_owned(),
            validation: Validation::Quorum {
                quorum: requirement.quorum,
                result_hash: hash.to_owned(),
                agreeing: agreeing.collect(),
                disagreeing: disagreeing.collect(),
            },
        };
    }
    let distinct = distinct_hashes(results);
    if results.len() >= usize::from(requirement.result_limit) {
        return Outcome::NoQuorum { results: results.len(), distinct_hashes: distinct, quorum: requirement.quorum };
    }
    let needed = if distinct > 1 {
        ReplicaNeeded::Disagreement { distinct_hashes: distinct as u32 }
    } else {
        ReplicaNeeded::Requested { replicas: requirement.replicas }
    };
    Outcome::AnotherReplica { needed, requirement }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: config::Validation =
        config::Validation { trust_threshold: 3, spot_check_ppm: 50_000, extra_replicas: 2 };

    fn requirement(replicas: u8) -> Requirement {
        Requirement { replicas, quorum: replicas / 2 + 1, result_limit: replicas + SETTINGS.extra_replicas }
    }

    fn results<'a>(hashes: &[&'a str]) -> Vec<Reported<'a>> {
        hashes.iter().map(|hash| Reported { node_id: NodeId::new(), result_hash: hash }).collect()
    }

    fn check(trust: u32, draw_ppm: u32) -> SingleCheck {
        SingleCheck { trust, draw_ppm, impossible: None }
    }

    #[test]
    fn a_trusted_node_outside_the_spot_check_completes_alone() {
        let outcome = decide(requirement(1), &results(&["a"]), Some(&check(3, 50_000)), &SETTINGS);
        assert!(matches!(outcome, Outcome::Complete { validation: Validation::Unchecked { .. }, .. }), "{outcome:?}");
    }

    #[test]
    fn an_untrusted_node_gets_a_second_opinion() {
        let outcome = decide(requirement(1), &results(&["a"]), Some(&check(2, 999_999)), &SETTINGS);
        let Outcome::AnotherReplica { needed, requirement } = outcome else { panic!("{outcome:?}") };
        assert_eq!(needed, ReplicaNeeded::UntrustedNode { trust: 2, threshold: 3 });
        assert_eq!((requirement.quorum, requirement.result_limit), (2, 4));
    }

    #[test]
    fn a_trusted_node_is_spot_checked_when_the_draw_falls_under_the_rate() {
        let outcome = decide(requirement(1), &results(&["a"]), Some(&check(10, 49_999)), &SETTINGS);
        assert!(matches!(outcome, Outcome::AnotherReplica { needed: ReplicaNeeded::SpotCheck { .. }, .. }));
    }

    #[test]
    fn a_check_that_cannot_be_run_is_recorded_as_skipped() {
        let single = SingleCheck { trust: 0, draw_ppm: 0, impossible: Some("no other owner has nodes".into()) };
        let outcome = decide(requirement(1), &results(&["a"]), Some(&single), &SETTINGS);
        let Outcome::Complete { validation: Validation::Unchecked { check_skipped, .. }, .. } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(check_skipped.as_deref(), Some("no other owner has nodes"));
    }

    #[test]
    fn two_replicas_need_both_to_agree() {
        assert!(matches!(
            decide(requirement(2), &results(&["a"]), None, &SETTINGS),
            Outcome::AnotherReplica { needed: ReplicaNeeded::Requested { replicas: 2 }, .. }
        ));
        let outcome = decide(requirement(2), &results(&["a", "a"]), None, &SETTINGS);
        let Outcome::Complete { result_hash, validation: Validation::Quorum { agreeing, disagreeing, .. } } = outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!((result_hash.as_str(), agreeing.len(), disagreeing.len()), ("a", 2, 0));
    }

    #[test]
    fn a_disagreement_sends_another_replica_until_the_limit() {
        assert!(matches!(
            decide(requirement(2), &results(&["a", "b"]), None, &SETTINGS),
            Outcome::AnotherReplica { needed: ReplicaNeeded::Disagreement { distinct_hashes: 2 }, .. }
        ));
        let outcome = decide(requirement(2), &results(&["a", "b", "b"]), None, &SETTINGS);
        let Outcome::Complete { validation: Validation::Quorum { agreeing, disagreeing, .. }, .. } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!((agreeing.len(), disagreeing.len()), (2, 1));
        assert_eq!(
            decide(requirement(2), &results(&["a", "b", "c", "d"]), None, &SETTINGS),
            Outcome::NoQuorum { results: 4, distinct_hashes: 4, quorum: 2 }
        );
    }

    #[test]
    fn three_replicas_stop_at_two_agreeing() {
        assert!(matches!(
            decide(requirement(3), &results(&["a", "a"]), None, &SETTINGS),
            Outcome::Complete { validation: Validation::Quorum { quorum: 2, .. }, .. }
        ));
    }
}
