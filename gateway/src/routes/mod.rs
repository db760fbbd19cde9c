//! The HTTP routes, one module per resource, each with its own `router()`.

pub mod cells;
pub mod commands;
pub mod consent;
pub mod dashboard;
pub mod events;
pub mod grid_compat;
pub mod health;
pub mod ledger;
pub mod node_connection;
pub mod nodes;
pub mod operations;
pub mod organizations;
pub mod reports;
pub mod tasks;
