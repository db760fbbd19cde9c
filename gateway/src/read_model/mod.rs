//! The read model: SELECTs only (the gateway never writes PostgreSQL), and Redis reads of live
//! state. Every query takes the caller's scope: `Some(organisation)` or `None` for the operator.

pub mod commands;
pub mod credits;
pub mod events;
pub mod nodes;
pub mod proof_pages;
pub mod proofs;
pub mod reports;
pub mod stats;
pub mod tasks;

/// Exact amounts, with the display figure beside them.
pub fn eur(peur: i64) -> f64 {
    grid_shared::carbon::PicoEuros(peur).as_eur()
}
