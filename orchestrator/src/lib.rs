//! The orchestrator: the only writer of PostgreSQL (DESIGN §9).
//!
//! Every process is the active writer of its cell or a standby ([`lease`]). The writer
//! keeps its state in memory ([`model`]), decides with pure functions ([`model::lifecycle`],
//! [`scheduler`], [`validation`], [`writer::apply`]) and commits each batch in one transaction
//! ([`store::postgres`]), then publishes and acknowledges ([`store::streams`]).
//!
//! - [`app`]: roles, the admin endpoint and shutdown; [`config`]: settings from the environment;
//!   [`status`]: the role and epoch `/readyz` reports; [`error`]: errors of the audit tools.
//! - [`writer`]: the batched loop.
//! - [`ledger`]: reading and verifying the green-proof chain; [`replay`]: projections rebuilt
//!   from events alone, diffed against the tables.
//! - [`simulation`]: the decide path run through seeded random histories, its invariants
//!   checked after every step (`orchestrator simulate`, `just sim`).

pub mod admin;
pub mod app;
pub mod config;
pub mod error;
pub mod lease;
pub mod ledger;
pub mod model;
pub mod replay;
pub mod scheduler;
pub mod signals;
pub mod simulation;
pub mod status;
pub mod store;
pub mod validation;
pub mod writer;
