//! `--trace FILE` (on `inspect`, `generate` and `bench decode`): the steps' ops as a Chrome
//! trace-event file, which Perfetto (ui.perfetto.dev) and `chrome://tracing` open.

use std::path::Path;

use anyhow::{Context, Result};

use crate::engine::inspect::op_timer::Timeline;
use crate::engine::inspect::trace::chrome_trace;
use crate::engine::model::gpt2::Gpt2;

/// Writes `timeline` to `path`; `device` names the process in the viewer.
pub fn write(path: &Path, timeline: &Timeline, device: &str) -> Result<()> {
    let json = serde_json::to_string(&chrome_trace(timeline, device))?;
    std::fs::write(path, json).with_context(|| format!("cannot write the trace to {}", path.display()))
}

/// Runs `f` with every step of `model` timed op by op when `path` is given, then writes them
/// there; without a path `f` runs untouched.
pub fn traced<T>(model: &Gpt2, path: Option<&Path>, device: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let Some(path) = path else { return f() };
    model.start_trace();
    let out = f();
    let timeline = pollster::block_on(model.finish_trace())?;
    let out = out?;
    if let Some(timeline) = timeline {
        write(path, &timeline, device)?;
        eprintln!("trace of {} steps written to {} (open it in ui.perfetto.dev)", timeline.steps.len(), path.display());
    }
    Ok(out)
}
