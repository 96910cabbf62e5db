//! The KV page's picture of the cache itself, for the sequence of its last run, step by step:
//! every stored key as a cell (a row per layer and head, a column per token, shaded by the
//! key's norm) filling a buffer allocated for the whole generation; the same tokens through a
//! sliding window's ring, which overwrites its oldest slot; and through a paged cache's block
//! table, beside a second request for the same prompt that shares its full blocks (prefix
//! caching, by the engine's own block manager).

use std::time::Duration;

use leptos::prelude::*;

use crate::engine::kv::DEFAULT_BLOCK_SIZE;
use crate::engine::kv::blocks::{BlockId, BlockManager};
use crate::web::bridge::{CacheKeys, EngineHandle};
use crate::web::charts::CHART_W;
use crate::web::form::{Field, field};
use crate::web::timeline::{BlockCell, BlockGrid};

const LEFT: f64 = 64.0;

/// A key's norm as a colour: where it lies between the smallest and largest of its layer.
fn shade(norm: f32, (low, high): (f32, f32)) -> String {
    let t = ((norm - low) / (high - low).max(f32::MIN_POSITIVE)).clamp(0.0, 1.0);
    format!("fill: color-mix(in srgb, var(--heat-high) {:.0}%, var(--heat-low))", 15.0 + 85.0 * t)
}

fn layer_range(layer: &[Vec<f32>]) -> (f32, f32) {
    layer.iter().flatten().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &n| (a.min(n), b.max(n)))
}

/// The token's text, with its whitespace visible.
fn shown(token: &str) -> String {
    token.replace('\n', "↵").replace(' ', "·")
}

/// `keys`: what the cache stored (the prompt and every generated token but the last, which is
/// never fed back); `prompt`: how many of them the prefill wrote; `capacity`: the slots the
/// contiguous cache allocated (prompt + tokens asked for).
#[component]
pub fn CacheMap(prompt: Signal<usize>, capacity: Signal<usize>) -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    // Tokens stored so far: the prefill's, then one per decode step.
    let stored = RwSignal::new(0usize);
    let stored_max = move || engine.cache_keys.with(|k| k.as_ref().map_or(0, |k| k.ids.len()));
    // Plays the filling once per new picture, a step every 150 ms.
    Effect::new(move || {
        let total = stored_max();
        let first = prompt.get_untracked().min(total);
        stored.set(first);
        if total > first {
            let tick = set_interval_with_handle(
                move || stored.update(|n| *n = (*n + 1).min(total)),
                Duration::from_millis(150),
            );
            if let Ok(handle) = tick {
                let stop = move || handle.clear();
                Effect::new(move || {
                    if stored.get() >= total {
                        stop();
                    }
                });
            }
        }
    });
    let window = RwSignal::new("8".to_string());
    let block_size = RwSignal::new(DEFAULT_BLOCK_SIZE.to_string());
    let picture = move || {
        engine.cache_keys.get().map(|keys| {
            let (prompt, capacity) = (prompt.get().min(keys.ids.len()), capacity.get().max(keys.ids.len()));
            view! {
                <div class="row">
                    <label class="scrubber">"tokens stored "
                        <input type="range" min=prompt max=keys.ids.len() prop:value=move || stored.get()
                            on:input=move |ev| stored.set(event_target_value(&ev).parse().unwrap_or(0)) data-testid="cache-step"/>
                    </label>
                    <span data-testid="cache-stored">{move || format!("{} of {} slots written (prompt: {prompt})", stored.get(), capacity)}</span>
                </div>
                <Contiguous keys=keys.clone() stored capacity/>
                <div class="charts">
                    <Ring keys=keys.clone() stored window/>
                    <Paged keys prompt stored block_size/>
                </div>
            }
        })
    };
    view! {
        <h3>"(b) The cache itself, as it fills"</h3>
        <p class="hint">"Each cell is one stored key: a row per layer and head, a column per token, darker for a longer key (its norm, "
            "scaled within each layer). The prefill writes the prompt's keys at once, then each decode step writes one more; "
            "the buffer was allocated for the whole generation up front. Hover a cell for its token and norm."</p>
        <div class="row">
            <Field label="window" value=window testid="cache-window"/>
            <Field label="block size" value=block_size testid="cache-block-size"/>
        </div>
        {picture}
    }
}

/// The contiguous cache: every layer and head, a column per slot of the allocated buffer.
#[component]
fn Contiguous(keys: CacheKeys, stored: RwSignal<usize>, capacity: usize) -> impl IntoView {
    let (layers, heads) = (keys.norms.len(), keys.norms.first().map_or(0, Vec::len));
    let cell_w = ((CHART_W + 300.0 - LEFT) / capacity as f64).clamp(3.0, 16.0);
    let row_h = (320.0 / (layers * heads).max(1) as f64).clamp(3.0, 12.0);
    let gap = 6.0;
    let layer_h = row_h * heads as f64 + gap;
    let width = LEFT + cell_w * capacity as f64;
    let height = layer_h * layers as f64;
    let mut cells = vec![];
    for (l, layer) in keys.norms.iter().enumerate() {
        let range = layer_range(layer);
        for (h, row) in layer.iter().enumerate() {
            for (p, &norm) in row.iter().enumerate() {
                let tip = format!(
                    "layer {} · head {} · token {p} {:?} · |k| = {norm:.2}",
                    l + 1,
                    h + 1,
                    shown(&keys.tokens[p])
                );
                let (x, y) = (LEFT + p as f64 * cell_w, l as f64 * layer_h + h as f64 * row_h);
                cells.push(view! { <rect x=x y=y width=cell_w height=row_h style=shade(norm, range)><title>{tip}</title></rect> });
            }
        }
    }
    let labels = (0..layers)
        .map(|l| view! { <text x=LEFT - 6.0 y=l as f64 * layer_h + (layer_h - gap) / 2.0 + 4.0 text-anchor="end" class="tick">{format!("layer {}", l + 1)}</text> })
        .collect_view();
    // What is not written yet: one cover per layer, from the first empty slot to the buffer's end.
    let covers = move || {
        let n = stored.get();
        (0..layers)
            .map(|l| {
                view! { <rect x=LEFT + n as f64 * cell_w y=l as f64 * layer_h width=(capacity - n) as f64 * cell_w height=layer_h - gap class="unwritten"/> }
            })
            .collect_view()
    };
    let aria = format!(
        "The contiguous KV cache: {layers} layers × {heads} heads × {capacity} slots; each written slot shaded by its key's norm."
    );
    view! {
        <figure class="chart cache-map" data-testid="cache-contiguous">
            <figcaption>{move || format!("Contiguous cache: {} of {capacity} slots written", stored.get())}</figcaption>
            <div class="scroll" tabindex="0" role="region" aria-label="the contiguous cache (scrolls sideways)">
                <svg width=width height=height viewBox=format!("0 0 {width} {height}") role="img" aria-label=aria>
                    {labels}{cells}{covers}
                </svg>
            </div>
            <div class="keys">
                <span class="key"><i class="heat-low"></i>"short key"</span>
                <span class="key"><i class="heat-high"></i>"long key"</span>
                <span class="key"><i class="unwritten"></i>"allocated, not written yet"</span>
            </div>
        </figure>
    }
}

/// A sliding window of `window` slots: token `p` lives in slot `p % window`, so once the ring is
/// full each new token overwrites the oldest. Shown for the first layer, whose keys depend only
/// on each token and its position (deeper layers' keys would differ under a window).
#[component]
fn Ring(keys: CacheKeys, stored: RwSignal<usize>, window: RwSignal<String>) -> impl IntoView {
    move || {
        let w: usize = field("window", &window.get()).unwrap_or(8).clamp(1, 64);
        let n = stored.get();
        let heads = keys.norms[0].len();
        let range = layer_range(&keys.norms[0]);
        let cell = (CHART_W - LEFT) / w as f64;
        let row_h = 24.0;
        let (width, height) = (CHART_W, row_h * heads as f64 + 20.0);
        // Slot j holds the latest token p < n with p % w == j.
        let holds = |j: usize| (j < n).then(|| j + (n - 1 - j) / w * w);
        let newest = n.checked_sub(1).map(|p| p % w);
        let next = (n >= w).then_some(n % w);
        let mut cells = vec![];
        for h in 0..heads {
            for j in 0..w {
                let (x, y) = (LEFT + j as f64 * cell, 20.0 + h as f64 * row_h);
                let (style, tip, text) = match holds(j) {
                    Some(p) => {
                        let norm = keys.norms[0][h][p];
                        (
                            shade(norm, range),
                            format!(
                                "slot {j} · token {p} {:?} · head {} · |k| = {norm:.2}",
                                shown(&keys.tokens[p]),
                                h + 1
                            ),
                            p.to_string(),
                        )
                    }
                    None => ("fill: var(--surface)".into(), format!("slot {j} · empty"), String::new()),
                };
                let class = if Some(j) == newest {
                    "slot newest"
                } else if Some(j) == next {
                    "slot oldest"
                } else {
                    "slot"
                };
                let label = (cell >= 24.0 && h == 0)
                    .then(|| view! { <text x=x + cell / 2.0 y=14.0 text-anchor="middle" class="tick">{text}</text> });
                cells.push(view! {
                    {label}
                    <rect x=x + 1.0 y=y + 1.0 width=cell - 2.0 height=row_h - 2.0 style=style class=class><title>{tip}</title></rect>
                });
            }
        }
        let labels = (0..heads)
            .map(|h| view! { <text x=LEFT - 6.0 y=20.0 + h as f64 * row_h + row_h / 2.0 + 4.0 text-anchor="end" class="tick">{format!("head {}", h + 1)}</text> })
            .collect_view();
        let caption = match next {
            Some(j) => format!("Sliding window of {w}: the next token overwrites slot {j} (token {})", n - w),
            None => format!("Sliding window of {w}: {n} of {w} slots filled"),
        };
        view! {
            <figure class="chart" data-testid="cache-ring">
                <figcaption>{caption.clone()}</figcaption>
                <svg width=width height=height viewBox=format!("0 0 {width} {height}") role="img" aria-label=format!("{caption}. The number on each slot is the token it holds (first layer).")>
                    {labels}{cells}
                </svg>
                <div class="keys">
                    <span class="key"><i class="newest"></i>"just written"</span>
                    <span class="key"><i class="oldest"></i>"overwritten next"</span>
                    <span class="key">"numbers: the token each slot holds (first layer)"</span>
                </div>
            </figure>
        }
    }
}

/// The block tables of the paged cache for this sequence (request A) and for a second request
/// with the same prompt (B), admitted after A's prefill: B finds A's full prompt blocks in the
/// prefix cache and shares them.
struct PagedState {
    pool: usize,
    a: Vec<BlockId>,
    b: Vec<BlockId>,
    shared: usize,
}

fn paged_state(ids: &[u32], prompt: usize, stored: usize, block_size: usize) -> Option<PagedState> {
    let probe = BlockManager::new(1, block_size).ok()?;
    let pool = probe.blocks_for(ids.len()) + probe.blocks_for(prompt) + 2;
    let mut blocks = BlockManager::new(pool, block_size).ok()?;
    let (mut a, mut b) = (vec![], vec![]);
    blocks.prepare_write(&mut a, 0, prompt).ok()?;
    blocks.register_full(&a, &ids[..prompt], prompt);
    let shared = blocks.match_prefix(&ids[..prompt], &mut b) / block_size;
    blocks.prepare_write(&mut b, shared * block_size, prompt).ok()?;
    blocks.prepare_write(&mut a, prompt, stored.max(prompt)).ok()?;
    Some(PagedState { pool, a, b, shared })
}

#[component]
fn Paged(keys: CacheKeys, prompt: usize, stored: RwSignal<usize>, block_size: RwSignal<String>) -> impl IntoView {
    move || {
        let bs: usize = field("block size", &block_size.get()).unwrap_or(DEFAULT_BLOCK_SIZE).clamp(1, 64);
        let n = stored.get();
        let state = paged_state(&keys.ids, prompt, n, bs)?;
        let owner = |block: BlockId| {
            let (in_a, in_b) = (state.a.contains(&block), state.b.contains(&block));
            match (in_a, in_b) {
                (true, true) => Some(("var(--series-3)", "shared by A and B")),
                (true, false) => Some(("var(--series-1)", "request A")),
                (false, true) => Some(("var(--series-5)", "request B")),
                (false, false) => None,
            }
        };
        let filled = |table: &[BlockId], tokens: usize, block: BlockId| {
            table.iter().position(|&b| b == block).map(|i| tokens.saturating_sub(i * bs).min(bs))
        };
        let cells = (0..state.pool as BlockId)
            .map(|block| match owner(block) {
                Some((fill, who)) => {
                    let held = filled(&state.a, n, block).or_else(|| filled(&state.b, prompt, block)).unwrap_or(0);
                    BlockCell {
                        fill,
                        tip: format!("block {block} · {who} · {held} of {bs} slots written"),
                        label: Some(block.to_string()),
                    }
                }
                None => BlockCell {
                    fill: "var(--surface)",
                    tip: format!("block {block} · free"),
                    label: Some(block.to_string()),
                },
            })
            .collect::<Vec<_>>();
        let table = |name: &str, table: &[BlockId], tokens: usize| {
            let entries = table
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let shared = i < state.shared;
                    let span = format!("tokens {}–{}", i * bs, (tokens.min((i + 1) * bs)).saturating_sub(1));
                    view! { <span class="entry" class:shared=shared title=format!("logical block {i} ({span}) → physical block {b}{}", if shared { " (shared)" } else { "" })>{b.to_string()}</span> }
                })
                .collect_view();
            view! { <div class="block-table"><b>{format!("{name}: ")}</b>{entries}</div> }
        };
        let summary = format!(
            "{} of {} blocks in use; B shares A's first {} (its prompt's full blocks)",
            state.pool - (0..state.pool as BlockId).filter(|&b| owner(b).is_none()).count(),
            state.pool,
            state.shared
        );
        Some(view! {
            <figure class="chart" data-testid="cache-paged">
                <figcaption>{format!("Paged cache, blocks of {bs}: the pool, and each request's block table")}</figcaption>
                <BlockGrid cells per_row=12 cell=32.0 label=format!("The paged cache's pool: {summary}")/>
                <p class="hint">{summary}</p>
                {table("A (this run)", &state.a, n)}
                {table("B (the same prompt)", &state.b, prompt)}
                <div class="keys">
                    <span class="key"><i style="background: var(--series-1)"></i>"A only"</span>
                    <span class="key"><i style="background: var(--series-5)"></i>"B only"</span>
                    <span class="key"><i style="background: var(--series-3)"></i>"shared (prefix cache)"</span>
                </div>
            </figure>
        })
    }
}
