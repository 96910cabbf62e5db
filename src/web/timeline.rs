//! The Batching page's two pictures of a run: a timeline (one lane per request, coloured by
//! what it was doing: queued, prefill, decode, padding, preempted) with a scrub line, and the
//! KV block map at the scrubbed moment (each request's blocks in its own colour, free blocks
//! blank: fragmentation and waste are visible at a glance), drawn by the block grid the KV
//! page's paged cache shares. Details on hover.

use leptos::prelude::*;

use crate::engine::batching::sequence::Phase;
use crate::session::protocol::PolicyRun;
use crate::web::charts::{CHART_W, PALETTE, label, ticks};

const W: f64 = CHART_W;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 8.0;
const AXIS: f64 = 30.0;

/// Colour and name of each phase, shared with the legend.
pub const PHASES: [(Phase, &str, &str); 5] = [
    (Phase::Queued, "var(--phase-queued)", "queued"),
    (Phase::Prefill, "var(--phase-prefill)", "prefill"),
    (Phase::Decode, "var(--phase-decode)", "decode"),
    (Phase::Padding, "var(--phase-padding)", "padding (finished, seat held)"),
    (Phase::Preempted, "var(--phase-preempted)", "preempted"),
];

fn phase_style(phase: Phase) -> (&'static str, &'static str) {
    PHASES.iter().find(|p| p.0 == phase).map_or(("var(--ink)", "?"), |p| (p.1, p.2))
}

/// A request's colour in the block map.
pub fn request_color(id: usize) -> &'static str {
    PALETTE[id % PALETTE.len()]
}

/// The end of a run's last span (its time axis).
pub fn run_end(run: &PolicyRun) -> f64 {
    run.requests.iter().flat_map(|r| r.spans.iter().map(|s| s.end_ms)).fold(0.0, f64::max)
}

#[component]
pub fn Timeline(
    #[prop(into)] title: String,
    #[prop(into)] run: Signal<Option<PolicyRun>>,
    scrub: RwSignal<f64>,
    #[prop(optional, into)] testid: String,
) -> impl IntoView {
    let picture = move || {
        let run = run.get()?;
        let time_ticks = ticks(0.0, run_end(&run));
        let end = time_ticks.last().copied().unwrap_or(1.0).max(1e-3);
        let lanes = run.requests.len().max(1);
        let lane = (360.0 / lanes as f64).clamp(3.0, 14.0);
        let height = TOP + lane * lanes as f64 + AXIS;
        let sx = move |t: f64| LEFT + t / end * (W - LEFT - RIGHT);
        let summary = format!(
            "{lanes} requests over {:.0} ms: one lane each, coloured by phase (queued, prefill, decode, padding, preempted); hover a span for its times",
            run_end(&run)
        );
        let rects = run
            .requests
            .iter()
            .flat_map(|r| {
                let y = TOP + lane * r.index as f64;
                r.spans.iter().filter(|s| s.end_ms > s.start_ms || s.phase == Phase::Preempted).map(move |s| {
                    let (color, name) = phase_style(s.phase);
                    let width = (sx(s.end_ms) - sx(s.start_ms)).max(1.0);
                    let tip = format!("request {} · {name} · {:.0}–{:.0} ms", r.index, s.start_ms, s.end_ms);
                    view! { <rect x=sx(s.start_ms) y=y width=width height=(lane - 1.0).max(1.0) style=format!("fill:{color}")><title>{tip}</title></rect> }
                })
            })
            .collect_view();
        let tick_marks = time_ticks
            .iter()
            .map(
                |&t| view! { <text x=sx(t) y=height - AXIS + 14.0 text-anchor="middle" class="tick">{label(t)}</text> },
            )
            .collect_view();
        let line = move || {
            let x = sx(scrub.get().min(end));
            view! { <line x1=x x2=x y1=TOP y2=height - AXIS class="scrub"/> }
        };
        Some(view! {
            <svg width=W height=height viewBox=format!("0 0 {W} {height}") role="img" aria-label=summary>
                <text x="4" y=TOP + 10.0 class="tick">"req"</text>
                {rects}
                <line x1=LEFT x2=W - RIGHT y1=height - AXIS y2=height - AXIS class="axis"/>
                {tick_marks}
                <text x=(LEFT + W - RIGHT) / 2.0 y=height - 4.0 text-anchor="middle" class="axis-title">"time (ms)"</text>
                {line}
            </svg>
        })
    };
    let legend = PHASES
        .iter()
        .map(|(_, color, name)| view! { <span class="key"><i style=format!("background:{color}")></i>{*name}</span> })
        .collect_view();
    view! {
        <figure class="chart" data-testid=testid>
            <figcaption>{title}</figcaption>
            {picture}
            <div class="keys">{legend}</div>
        </figure>
    }
}

/// One block of a pool as [`BlockGrid`] draws it.
pub struct BlockCell {
    pub fill: &'static str,
    pub tip: String,
    /// Printed in the cell (its block id), when cells are large enough for text.
    pub label: Option<String>,
}

/// A pool of KV blocks as a grid, one cell per block coloured by what holds it (free blocks
/// blank): the batching page's block map and the KV page's paged cache. Details on hover.
#[component]
pub fn BlockGrid(cells: Vec<BlockCell>, per_row: usize, cell: f64, #[prop(into)] label: String) -> impl IntoView {
    let rows = cells.len().div_ceil(per_row).max(1);
    let (width, height) = (per_row.min(cells.len()).max(1) as f64 * cell, rows as f64 * cell);
    let rects = cells
        .into_iter()
        .enumerate()
        .map(|(block, BlockCell { fill, tip, label })| {
            let (x, y) = ((block % per_row) as f64 * cell, (block / per_row) as f64 * cell);
            view! {
                <g>
                    <rect x=x + 1.0 y=y + 1.0 width=cell - 2.0 height=cell - 2.0 style=format!("fill:{fill}") class="block"><title>{tip}</title></rect>
                    {label.map(|l| view! { <text x=x + cell / 2.0 y=y + cell / 2.0 + 4.0 text-anchor="middle" class="block-label">{l}</text> })}
                </g>
            }
        })
        .collect_view();
    view! { <svg width=width height=height viewBox=format!("0 0 {width} {height}") class="blockmap" role="img" aria-label=label>{rects}</svg> }
}

/// The block map of `run` at the scrubbed time.
#[component]
pub fn BlockMap(#[prop(into)] run: Signal<Option<PolicyRun>>, scrub: RwSignal<f64>) -> impl IntoView {
    let picture = move || {
        let run = run.get()?;
        let t = scrub.get();
        let snapshot = run.blocks.iter().take_while(|s| s.at_ms <= t).last().or(run.blocks.first())?.clone();
        let used = snapshot.owners.iter().filter(|&&o| o >= 0).count();
        let cells = snapshot
            .owners
            .iter()
            .enumerate()
            .map(|(block, &owner)| match owner {
                o if o < 0 => BlockCell { fill: "var(--surface)", tip: format!("block {block} · free"), label: None },
                _ => BlockCell {
                    fill: request_color(owner as usize),
                    tip: format!("block {block} · request {owner}"),
                    label: None,
                },
            })
            .collect();
        let bs = run.config.block_size;
        let summary = format!(
            "at {:.0} ms: {used} of {} blocks ({bs} tokens each) in use",
            snapshot.at_ms,
            snapshot.owners.len()
        );
        Some(view! {
            <p class="hint">{summary.clone()}</p>
            <BlockGrid cells per_row=32 cell=15.0 label=format!("KV block map, {summary}; a colour per request")/>
        })
    };
    view! {
        <figure class="chart" data-testid="batching-blocks">
            <figcaption>"KV blocks at the scrubbed moment (a colour per request)"</figcaption>
            {picture}
        </figure>
    }
}
