//! The native shell around the engine: device choice, model files (local or from a hub),
//! the `inferlab` command line and its benchmarks.

pub mod batch;
pub mod bench;
pub mod cli;
pub mod decoding;
pub mod device;
pub mod hub;
pub mod model_dir;
pub mod serve;
pub mod simulate;
