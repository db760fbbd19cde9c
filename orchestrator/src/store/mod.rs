//! The orchestrator's I/O.
//!
//! - [`postgres`]: the only code that writes the tables (one fenced transaction per batch);
//! - [`load`]: what the writer reads from PostgreSQL (its state at takeover, lookups);
//! - [`streams`]: Redis streams, publication, the fleet's live state and recovery.

pub mod load;
pub mod postgres;
pub mod streams;
