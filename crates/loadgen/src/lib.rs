//! The crowd: simulated people using Hawker through its public HTTP API, as
//! real clients do. `hawker-loadgen` uses it for benchmarks; `hawker demo` uses
//! [`crowd::flash_sales`] and [`crowd::chat`] to keep the demo room busy;
//! [`room`] is the live-room benchmark.

pub mod crowd;
pub mod room;
