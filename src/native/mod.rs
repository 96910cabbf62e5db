//! The native shell around the engine: device choice, model files (local or from a hub),
//! the `inferlab` command line and its benchmarks, the server and the desktop app.

pub mod app;
pub mod args;
pub mod batch;
pub mod bench;
pub mod cli;
pub mod device;
pub mod generate;
pub mod hub;
pub mod inspect;
pub mod model_dir;
pub mod perplexity;
pub mod serve;
pub mod simulate;
pub mod trace;

/// What a caught panic said, for the error that replaces it.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}
