//! The vocabulary of KoproGo Grid, shared by the gateway, the orchestrator and the worker.
//! No I/O happens here.
//!
//! - [`ids`]: typed identifiers.
//! - [`domain`]: validated domain values (node spec, priority, task kinds, task status machine).
//! - [`envelope`]: the versioned envelope every message travels in.
//! - [`messages`]: commands, reports and node messages; [`events`]: domain events.
//! - [`carbon`]: carbon credits in exact integers; [`proof`]: the green-proof chain.
//! - [`keys`]: Redis key and stream names under a namespace; [`live`]: heartbeat state, eco score.
//! - [`reasons`]: why a task is where it is ([`reasons::TaskReason`]) and why a message was
//!   refused ([`reasons::Refusal`]), serialised in one place.
//! - [`signals`]: carbon intensity per zone and hour, from a chain of sources.
//! - [`settings`]: settings read by several services, parsed from environment-like lookups.

pub mod blocks;
pub mod carbon;
pub mod domain;
pub mod envelope;
pub mod events;
pub mod ids;
pub mod keys;
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
