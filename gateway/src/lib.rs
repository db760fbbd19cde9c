//! The gateway: authenticates, validates, publishes commands (202 with the command id) and
//! answers queries from PostgreSQL. It never writes PostgreSQL; heartbeats are the one write it
//! makes directly, to the live-state hash in Redis.
//!
//! - [`app`]: router and server; [`state`], [`config`].
//! - [`auth`]: bearer keys and tokens; [`error`]: problem+json; [`extract`]: JSON/query/path
//!   extractors that answer problems.
//! - [`routes`]: one module per resource; [`read_model`]: SELECTs; [`publish`]: XADD of commands.
//! - [`openapi`]: the generated document; [`sse`]: Redis streams as server-sent events;
//!   [`channels`]: the nodes' task channels through one Redis reader; [`pressure`]: load
//!   shedding by the runtime's delay.

pub mod app;
pub mod auth;
pub mod channels;
pub mod config;
pub mod error;
pub mod extract;
pub mod linger;
pub mod metrics;
pub mod openapi;
pub mod pressure;
pub mod publish;
pub mod read_model;
pub mod routes;
pub mod sse;
pub mod state;
pub mod summaries;
