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
//! The writer's connections plan every statement with its values (`plan_cache_mode =
//! force_custom_plan`, set in [`connect`]): statements match tables against a batch's arrays
//! (`= any($1)`, a join with `unnest`), and a generic plan cached while a table was small (a seq
//! scan) would otherwise stay, and scan the whole table once it is large.

pub mod load;
pub mod postgres;
pub mod streams;
pub mod upgrade;

/// The orchestrator's pool: `max_connections` to `database_url`, each planning every statement
/// with its values (see above).
pub async fn connect(database_url: &str, max_connections: u32) -> Result<sqlx::PgPool, sqlx::Error> {
    let options: sqlx::postgres::PgConnectOptions = database_url.parse()?;
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options.options([("plan_cache_mode", "force_custom_plan")]))
        .await
}
