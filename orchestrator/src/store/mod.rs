//! The orchestrator's I/O: PostgreSQL rows it reads back, and Redis live state and claims.

pub mod redis;
pub mod tasks;
