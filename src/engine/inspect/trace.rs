//! A [`Timeline`] as a Chrome trace (the trace-event format Perfetto and `chrome://tracing`
//! open): the steps on one track, their ops on a second, times in microseconds.
//!
//! Written here rather than through `tracing`'s Chrome layer: that layer records host-side
//! spans as the host sees them, while these windows are the device's own (timestamps resolved
//! after the step), so the events are built from the timeline itself.

use serde::Serialize;

use crate::engine::inspect::op_timer::{Timeline, Timing};

/// The trace file's top level: `{"traceEvents": [...], "displayTimeUnit": "ms", ...}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChromeTrace {
    pub trace_events: Vec<TraceEvent>,
    pub display_time_unit: &'static str,
    pub other_data: OtherData,
}

#[derive(Debug, Serialize)]
pub struct OtherData {
    pub timing: Timing,
    pub device: String,
}

/// One event: `ph` "X" is a complete event (start `ts`, length `dur`), "M" names a track.
#[derive(Debug, Serialize)]
pub struct TraceEvent {
    pub name: String,
    pub ph: &'static str,
    pub pid: u32,
    pub tid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cat: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dur: Option<f64>,
    pub args: Args,
}

/// An event's arguments: a track's name, or an op's block and step.
#[derive(Debug, Default, Serialize)]
pub struct Args {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

const STEPS: u32 = 1;
const OPS: u32 = 2;

fn track(tid: u32, name: &str) -> TraceEvent {
    let args = Args { name: Some(name.to_owned()), ..Args::default() };
    TraceEvent { name: "thread_name".into(), ph: "M", pid: 1, tid, cat: None, ts: None, dur: None, args }
}

/// The timeline's steps and ops as trace events; `device` names the process.
pub fn chrome_trace(timeline: &Timeline, device: &str) -> ChromeTrace {
    let us = |ms: f64| ms * 1000.0;
    let process = Args { name: Some(format!("inferlab · {device}")), ..Args::default() };
    let mut events = vec![
        TraceEvent {
            name: "process_name".into(),
            ph: "M",
            pid: 1,
            tid: STEPS,
            cat: None,
            ts: None,
            dur: None,
            args: process,
        },
        track(STEPS, "steps"),
        track(OPS, "ops"),
    ];
    for step in &timeline.steps {
        events.push(TraceEvent {
            name: step.label.clone(),
            ph: "X",
            pid: 1,
            tid: STEPS,
            cat: Some("step"),
            ts: Some(us(step.start_ms)),
            dur: Some(us(step.ms)),
            args: Args::default(),
        });
        for op in &step.ops {
            let name = match op.layer {
                Some(layer) => format!("{} · block {layer}", op.op.name()),
                None => op.op.name().to_owned(),
            };
            events.push(TraceEvent {
                name,
                ph: "X",
                pid: 1,
                tid: OPS,
                cat: Some(op.op.name()),
                ts: Some(us(op.start_ms)),
                dur: Some(us(op.ms)),
                args: Args { layer: op.layer, step: Some(step.label.clone()), ..Args::default() },
            });
        }
    }
    ChromeTrace {
        trace_events: events,
        display_time_unit: "ms",
        other_data: OtherData { timing: timeline.timing, device: device.to_owned() },
    }
}
