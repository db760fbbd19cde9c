//! The orchestrator's one error type: a backing service failed, or an event could not be read.
//! Nothing here is a domain rejection (those are `Decision`s): every variant means "not done,
//! try again" (or, for an event, "the archive is damaged").

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("unreadable event: {0}")]
    Event(String),
}
