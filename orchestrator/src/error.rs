//! The orchestrator's one error type: this writer was fenced off, a backing service failed, or
//! an event could not be read. Nothing here is a domain rejection (those are the reasons a
//! message is rejected with): every variant means "not done" — try again, step down (fenced),
//! or look at the archive (an unreadable event).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another writer took over (its epoch is newer): this one must stop writing.
    #[error("fenced off: another writer took over (epoch {current}, this one held {held})")]
    Fenced { held: i64, current: i64 },
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A script answered what its wrapper does not know: nothing is taken as done.
    #[error("redis script: {0}")]
    Script(String),
    #[error("unreadable event: {0}")]
    Event(String),
}

impl From<grid_shared::wire::scripts::ScriptError> for Error {
    fn from(error: grid_shared::wire::scripts::ScriptError) -> Self {
        match error {
            grid_shared::wire::scripts::ScriptError::Redis(error) => Self::Redis(error),
            unknown => Self::Script(unknown.to_string()),
        }
    }
}
