//! The first screen: what each page shows and the idea it teaches, in two sentences each, and
//! one click to start on the demo pair.

use leptos::prelude::*;

use crate::web::app::Page;
use crate::web::bridge::EngineHandle;

/// Each page: its name, what it shows, and the idea it teaches.
const PAGES: [(Page, &str, &str, &str); 6] = [
    (
        Page::Playground,
        "Playground",
        "Type a prompt and watch the model continue it, one token per forward pass, with each token's latency. Greedy or sampled, on any of the caches.",
        "the decode loop",
    ),
    (
        Page::Kv,
        "KV Cache",
        "The same text generated with and without a cache, every token timed, and the cache itself drawn as it fills. What it costs in memory, and what a sliding window or paged blocks change.",
        "memory vs recompute",
    ),
    (
        Page::Batching,
        "Batching",
        "Requests arriving over time, served by static, dynamic and continuous batching on the loaded model's measured step cost, then through the real engine. Who waits, who runs, and what the KV blocks hold.",
        "throughput vs latency",
    ),
    (
        Page::Speculative,
        "Speculative",
        "A small draft guesses a few tokens and the target checks them all in one pass, keeping those it agrees with. The same text from fewer target passes, and how the speedup depends on agreement.",
        "draft + verify",
    ),
    (
        Page::Beam,
        "Beam search",
        "Several continuations kept at every step and ranked by their total log-probability, drawn as a tree of what was kept and what was pruned. The best sequence is not always the best token each step.",
        "search over sequences",
    ),
    (
        Page::Internals,
        "Inside a step",
        "One forward pass opened up: every head's attention, the model's guess after each block, and each op timed. Where a step's time goes.",
        "what one step computes",
    ),
];

#[component]
pub fn HomePage(page: RwSignal<Page>) -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let start = move |_| {
        engine.load_demo();
        page.set(Page::Playground);
    };
    let cards = PAGES
        .iter()
        .map(|&(p, name, what, idea)| {
            view! {
                <article class="home-card">
                    <h3>{name}</h3>
                    <p>{what}</p>
                    <p class="idea">"Teaches: "<b>{idea}</b></p>
                    <button class="secondary" on:click=move |_| page.set(p) data-testid=format!("home-open-{}", p.id())>{format!("Open {name}")}</button>
                </article>
            }
        })
        .collect_view();
    view! {
        <section class="page home" data-testid="home">
            <h2>"How a GPT-2 turns into fast text, one idea per page"</h2>
            <p class="lead">"Every number here is computed live by a real GPT-2 — in this tab on WebGPU, or on your machine's native engine. "
                "Start with the demo pair (two small models trained on Rust sources, no download), or load GPT-2 itself above."</p>
            <p><button class="primary" on:click=start disabled=move || engine.busy() data-testid="home-start">"Start with the demo pair"</button></p>
            <div class="home-cards">{cards}</div>
        </section>
    }
}
