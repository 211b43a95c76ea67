//! The crowd: simulated people using Hawker through its public HTTP API, as
//! real clients do. `hawker-loadgen` uses it for benchmarks; `hawker demo` uses
//! [`crowd::flash_sales`] to keep the demo room selling.

pub mod crowd;
