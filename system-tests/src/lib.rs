//! KoproGo Grid tested and measured whole, as its users meet it: the real gateway, real
//! orchestrator processes (writer and standby, killed, frozen, aborted between commit and
//! acknowledgement), simulated nodes (in process, or a `worker` process killed with `kill -9`),
//! a browser, schemathesis and promtool, over real PostgreSQL and Redis. No code here: the
//! tests are in `tests/` (one file per area, `tests/common` for `spawn_system` and the
//! processes) and the system bench in `benches/system/` (`just bench`).
//!
//! Each crate tests itself where it can (the gateway what it adds to the streams, the
//! orchestrator its writer step by step, the simulator its decide path); what needs the grid
//! together is here.
