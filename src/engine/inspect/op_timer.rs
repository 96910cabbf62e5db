//! Where a step's time goes, op by op, on the device it ran on.
//!
//! A device runs asynchronously: the time between launching an op and launching the next says
//! nothing. [`Clock::Profile`] asks the device for a profiling window around each op: on wgpu
//! with `timestamp-query`, and on CUDA, those are the device's own timestamps, written into the
//! command stream and read after the step, so nothing waits; elsewhere (the CPU, an adapter
//! without timestamps) burn syncs the device at both ends of the window and reads the wall
//! clock. [`Clock::Awaited`] does the latter by awaiting a read of each op's output, for the
//! browser, which cannot block on a sync. Synced figures include each op's launch and the
//! sync itself, and deny the device the overlap of one op with the next: the step takes
//! longer than it does unwatched, which is why the timeline says how it was timed.

use burn::tensor::{Device, ProfileDuration, Tensor, TimingMethod};
use web_time::Instant;

use crate::engine::error::{EngineError, Result};
use crate::engine::inspect::probe::{Op, Probe};
use crate::engine::readback;

/// How each op is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The device's profiling windows: timestamps where it has them, syncs where not.
    Profile,
    /// Wall time to an awaited read of the op's output (a browser adapter without timestamps).
    Awaited,
}

/// How the figures of a [`Timeline`] were taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timing {
    /// The device's timestamps around each op: what the device spent, launches aside.
    DeviceTimestamps,
    /// Wall time between a device sync before and after each op.
    Synced,
}

/// One op of one step. `layer` counts blocks from 1 (`None` outside the blocks); times are
/// milliseconds, `start_ms` from the timer's creation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpTime {
    pub op: Op,
    pub layer: Option<usize>,
    pub start_ms: f64,
    pub ms: f64,
}

/// One forward step: its wall time while timed (readback included), and its ops.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepTiming {
    pub label: String,
    pub start_ms: f64,
    pub ms: f64,
    pub ops: Vec<OpTime>,
}

impl StepTiming {
    /// Each op's time summed over the blocks, most first: what a profiler's summary says.
    pub fn by_op(&self) -> Vec<(Op, f64)> {
        let mut totals: Vec<(Op, f64)> = vec![];
        for time in &self.ops {
            match totals.iter_mut().find(|(op, _)| *op == time.op) {
                Some((_, ms)) => *ms += time.ms,
                None => totals.push((time.op, time.ms)),
            }
        }
        totals.sort_by(|a, b| b.1.total_cmp(&a.1));
        totals
    }
}

/// The timed steps, in order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Timeline {
    pub timing: Timing,
    pub steps: Vec<StepTiming>,
}

enum Window {
    Profiled(ProfileDuration),
    Wall { start: Instant, end: Instant },
}

struct PendingOp {
    op: Op,
    layer: Option<usize>,
    window: Window,
}

struct PendingStep {
    label: String,
    start: Instant,
    end: Instant,
    ops: Vec<PendingOp>,
}

/// Times the ops of the steps run through it (it is a [`Probe`]); [`OpTimer::finish`] reads
/// the figures once the steps are done.
pub struct OpTimer {
    device: Device,
    clock: Clock,
    epoch: Instant,
    steps: Vec<PendingStep>,
}

impl OpTimer {
    pub fn new(device: &Device, clock: Clock) -> Self {
        Self { device: device.clone(), clock, epoch: Instant::now(), steps: vec![] }
    }

    /// Ops timed from now on belong to a step called `label`.
    pub fn begin_step(&mut self, label: String) {
        let now = Instant::now();
        self.steps.push(PendingStep { label, start: now, end: now, ops: vec![] });
    }

    /// The current step ends now.
    pub fn end_step(&mut self) {
        if let Some(step) = self.steps.last_mut() {
            step.end = Instant::now();
        }
    }

    /// Every step timed so far, its windows resolved (device timestamps arrive after the work).
    pub async fn finish(self) -> Result<Timeline> {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let mut timing = Timing::DeviceTimestamps;
        let mut steps = vec![];
        for step in self.steps {
            let step_start = step.start.saturating_duration_since(self.epoch);
            // (start, length) of each op; device windows start on the device's clock.
            let mut windows = vec![];
            for pending in step.ops {
                let (op, layer) = (pending.op, pending.layer);
                windows.push(match pending.window {
                    Window::Profiled(window) => {
                        if window.timing_method() == TimingMethod::System {
                            timing = Timing::Synced;
                        }
                        let on_device = window.timing_method() == TimingMethod::Device;
                        let ticks = window.resolve().await;
                        // A window nothing ran in (an op the backend left lazy) takes no time.
                        let (start, dur) = ticks
                            .map(|t| (t.start_duration_since(self.epoch), t.duration()))
                            .unwrap_or((step_start, Default::default()));
                        (op, layer, start, dur, on_device)
                    }
                    Window::Wall { start, end } => {
                        timing = Timing::Synced;
                        (
                            op,
                            layer,
                            start.saturating_duration_since(self.epoch),
                            end.saturating_duration_since(start),
                            false,
                        )
                    }
                });
            }
            // The device's clock is not the host's: its windows keep their spacing, the first
            // placed at the step's start (no device work can begin before the step does).
            let first_on_device = windows.iter().filter(|w| w.4).map(|w| w.2).min();
            let ops = windows
                .into_iter()
                .map(|(op, layer, start, dur, on_device)| {
                    let start = match first_on_device {
                        Some(first) if on_device => step_start + start.saturating_sub(first),
                        _ => start,
                    };
                    OpTime { op, layer, start_ms: ms(start), ms: ms(dur) }
                })
                .collect();
            steps.push(StepTiming {
                label: step.label,
                start_ms: ms(step_start),
                ms: ms(step.end.saturating_duration_since(step.start)),
                ops,
            });
        }
        Ok(Timeline { timing, steps })
    }
}

impl Probe for OpTimer {
    async fn op(&mut self, op: Op, layer: Option<usize>, f: impl FnOnce() -> Tensor<2> + Send) -> Result<Tensor<2>> {
        let (out, window) = match self.clock {
            Clock::Profile => {
                let (out, window) = self.device.profile(f).map_err(|e| EngineError::Device(format!("{e:?}")))?;
                (out, Window::Profiled(window))
            }
            Clock::Awaited => {
                let start = Instant::now();
                let out = f();
                readback::floats(out.clone().slice([0..1, 0..1])).await?;
                (out, Window::Wall { start, end: Instant::now() })
            }
        };
        if let Some(step) = self.steps.last_mut() {
            step.ops.push(PendingOp { op, layer: layer.map(|l| l + 1), window });
        }
        Ok(out)
    }
}
