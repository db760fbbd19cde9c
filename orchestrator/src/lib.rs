//! The orchestrator: the only writer of PostgreSQL.
//!
//! - [`consumer`]: the consumer-group loop over `{ns}:commands` and `{ns}:reports`; one public
//!   step that reads, applies in one transaction with the message id, commits, then acknowledges.
//! - [`handlers`]: one module per message, deciding inside the transaction.
//! - [`outbox`]: events appended in commit order and relayed to `{ns}:events` and node channels.
//! - [`scheduler`]: the pure placement (`solve`) and its I/O (`dispatch`), with housekeeping.
//! - [`validation`]: result validation by quorum, with adaptive spot checks (pure).
//! - [`ledger`]: 70/30 credit entries and the green-proof chain, and its verification.
//! - [`store`]: task rows, Redis live state and atomic capacity claims.
//! - [`replay`]: projections rebuilt from events alone, diffed against the tables.
//! - [`app`]: wiring and shutdown; [`config`]: settings from the environment; [`error`]: the one
//!   error type.

pub mod app;
pub mod config;
pub mod consumer;
pub mod error;
pub mod handlers;
pub mod ledger;
pub mod outbox;
pub mod replay;
pub mod scheduler;
pub mod store;
pub mod validation;
