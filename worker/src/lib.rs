//! The worker that runs on a node (a Raspberry Pi): HTTP to the gateway only.
//!
//! - [`agent`]: heartbeats, the task channel (SSE, resumed), execution and reports.
//! - [`client`]: the gateway's HTTP API; [`sse`]: the event-stream parser.
//! - [`tasks`]: the computations, one module per kind.
//! - [`power`]: the documented power model; [`solar`]: constant or simulated solar; [`cpu`]: load.
//! - [`simulate`]: a fleet of simulated nodes in one process; [`load`]: sample submissions for
//!   the demo and for load.

pub mod agent;
pub mod client;
pub mod connection;
pub mod cpu;
pub mod load;
pub mod power;
pub mod simulate;
pub mod solar;
pub mod sse;
pub mod tasks;
