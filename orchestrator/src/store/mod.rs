//! The orchestrator's I/O.
//!
//! - [`postgres`]: the only code that writes the tables (one fenced transaction per batch);
//! - [`load`]: what the writer reads from PostgreSQL (its state at takeover, lookups);
//! - [`streams`]: Redis streams, publication, the fleet's live state and recovery;
//! - [`upgrade`]: a namespace's Redis keys written before cells, moved under the cell's tag.
//!
//! Every statement is a `sqlx::query!`, checked against the schema when it compiles (`.sqlx/`,
//! `just sqlx-prepare`). A batch's rows go as one array per column: an array of borrowed text
//! or of nullable values is bound `as &[_]`, which the macro cannot check (it knows one Rust
//! type per SQL array type); PostgreSQL still checks the array's type when it is bound.
//!
//! Statements that match a table against a batch's arrays with a join on `unnest` (the
//! updates) are not prepared (`persistent(false)`): each is planned with the batch's values. A
//! generic plan cached while a table was small (a seq scan) would otherwise stay, and scan the
//! whole table once it is large. The inserts are prepared: planning them with their values
//! (`plan_cache_mode = force_custom_plan` for every statement) was measured to cost PostgreSQL
//! a third more CPU per task. The lookups by `= any($1)` that return rows are prepared too
//! (sqlx's checked queries that return rows cannot be unprepared); the hot ones run in a
//! transaction planned by keys (`postgres::keyed_read`), so that no plan of theirs, cached or
//! not, scans a table.

pub mod load;
pub mod postgres;
pub mod streams;
pub mod upgrade;
