//! The vocabulary of KoproGo Grid, shared by the gateway, the orchestrator and the worker.
//! No I/O happens here, but in the script wrappers of [`wire::scripts`] (feature `redis`), which
//! send on a connection they are given.
//!
//! - [`ids`]: typed identifiers.
//! - [`domain`]: validated domain values (node spec, priority, task kinds, task status machine).
//! - [`envelope`]: the versioned envelope every message travels in.
//! - [`messages`]: commands, reports and node messages; [`events`]: domain events.
//! - [`carbon`]: carbon credits in exact integers; [`proof`]: the green-proof chain.
//! - [`cells`]: the grid's cells (`GRID_CELLS`).
//! - [`wire`]: the Redis protocol: key names per cell, stream entry ids, field names, scripts.
//! - [`live`]: heartbeat state, eco score.
//! - [`reasons`]: why a task is where it is ([`reasons::TaskReason`]) and why a message was
//!   refused ([`reasons::Refusal`]), serialised in one place.
//! - [`signals`]: carbon intensity per zone and hour, from a chain of sources.
//! - [`settings`]: settings read by several services, parsed from environment-like lookups.

pub mod blocks;
pub mod carbon;
pub mod cells;
pub mod domain;
pub mod envelope;
pub mod events;
pub mod ids;
pub mod live;
#[cfg(feature = "logging")]
pub mod logging;
pub mod merkle;
pub mod messages;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod proof;
pub mod reasons;
pub mod settings;
pub mod signals;
pub mod wire;
