//! The orchestrator's I/O.
//!
//! - [`postgres`]: the only code that writes the tables (one fenced transaction per batch);
//! - [`load`]: what the writer reads from PostgreSQL (its state at takeover, lookups);
//! - [`streams`]: Redis streams, publication, the fleet's live state and recovery;
//! - [`upgrade`]: a namespace's Redis keys written before cells, moved under the cell's tag.
//!
//! Statements that match a table against a batch's arrays (`= any($1)`, a join with `unnest`)
//! are not prepared (`persistent(false)`): each is planned with the batch's values. A plan
//! cached while a table was small (a seq scan) would otherwise stay, and scan the whole table
//! once it is large.

pub mod load;
pub mod postgres;
pub mod streams;
pub mod upgrade;
