//! The page: header, model panel (hub / local files / demo), and the Start, Playground, KV Cache,
//! Batching, Speculative, Beam search and Inside-a-step pages. The URL drives it for links and
//! tests: `?hub=URL&model=REPO` preloads a model,
//! `?page=home|playground|kv|batching|speculative|beam|internals` picks the page (without either,
//! the Start page; with a model, the Playground).

use std::fmt::Display;
use std::str::FromStr;

use leptos::ev;
use leptos::prelude::*;
use web_sys::{File, HtmlInputElement};

use super::bridge::{EngineHandle, EngineKind, ModelStatus, native_token};
use super::form::picked_files;
use super::pages::batching::BatchingPage;
use super::pages::beam::BeamPage;
use super::pages::home::HomePage;
use super::pages::internals::InternalsPage;
use super::pages::kv_cache::KvCachePage;
use super::pages::playground::PlaygroundPage;
use super::pages::speculative::SpeculativePage;
use crate::engine::kv::dtype::KvDtype;
use crate::engine::model::weight_dtype::WeightDtype;
use crate::session::protocol::{ModelSource, ToEngine};

/// The hub used when the URL and the settings name none.
pub const DEFAULT_HUB: &str = "https://huggingface.co";
/// Models offered in the picker (any repo id can be typed).
const OFFERED: [&str; 3] = ["openai-community/gpt2", "distilbert/distilgpt2", "openai-community/gpt2-medium"];

fn query(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()?.get(name).filter(|v| !v.is_empty())
}

#[derive(Clone, Copy, PartialEq)]
pub enum Page {
    Home,
    Playground,
    Kv,
    Batching,
    Speculative,
    Beam,
    Internals,
}

impl Page {
    const ALL: [Page; 7] =
        [Page::Home, Page::Playground, Page::Kv, Page::Batching, Page::Speculative, Page::Beam, Page::Internals];

    /// Its name in `?page=` and in its tab's `data-testid` (`tab-{id}`).
    pub fn id(self) -> &'static str {
        match self {
            Page::Home => "home",
            Page::Playground => "playground",
            Page::Kv => "kv",
            Page::Batching => "batching",
            Page::Speculative => "speculative",
            Page::Beam => "beam",
            Page::Internals => "internals",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Page::Home => "Start",
            Page::Playground => "Playground",
            Page::Kv => "KV Cache",
            Page::Batching => "Batching",
            Page::Speculative => "Speculative",
            Page::Beam => "Beam search",
            Page::Internals => "Inside a step",
        }
    }
}

#[component]
pub fn App() -> impl IntoView {
    let hub = RwSignal::new(query("hub").unwrap_or_else(|| DEFAULT_HUB.to_string()));
    let repo = RwSignal::new(query("model").unwrap_or_else(|| OFFERED[0].to_string()));
    // `?weights=f16|int8`: the linear layers and token table converted on load.
    let weights = RwSignal::new(query("weights").and_then(|w| w.parse().ok()).unwrap_or_default());
    // `?kv_dtype=f16`: KV caches of f16.
    let kv_dtype = RwSignal::new(query("kv_dtype").and_then(|d| d.parse().ok()).unwrap_or(KvDtype::F32));
    let asked = query("page").and_then(|id| Page::ALL.into_iter().find(|p| p.id() == id));
    let page = RwSignal::new(asked.unwrap_or(if query("model").is_some() { Page::Playground } else { Page::Home }));
    let preload = query("model");
    // `?kernels=off`: the tensor-op twins instead of the WGSL kernels (to measure the kernels).
    let kernels_off = query("kernels").as_deref() == Some("off");
    let engine = EngineHandle::start(move |engine| {
        if kernels_off {
            engine.send(&ToEngine::SetKernels(false), &[]);
        }
        if let Some(repo) = preload {
            engine.send(
                &ToEngine::Load(ModelSource::Hub {
                    hub: hub.get_untracked(),
                    repo,
                    weights: weights.get_untracked(),
                    kv_f16: kv_dtype.get_untracked() == KvDtype::F16,
                }),
                &[],
            );
        }
    });
    provide_context(engine);
    let tabs = Page::ALL
        .map(|p| {
            view! {
                <button class="tab" class:active=move || page.get() == p aria-current=move || (page.get() == p).then_some("page")
                    data-testid=format!("tab-{}", p.id()) on:click=move |_| page.set(p)>{p.title()}</button>
            }
        })
        .collect_view();
    view! {
        <header>
            <h1>"inferlab"</h1>
            <span class="tagline">{move || match engine.kind.get() {
                EngineKind::Tab => "GPT-2 inference, live on WebGPU",
                EngineKind::Native => "GPT-2 inference, live on the native engine",
            }}</span>
            <EngineSwitch/>
            <nav aria-label="pages">{tabs}</nav>
            // The book sits beside the app on a static host (scripts/build_site.sh puts it in dist/book/).
            <a class="book-link" href="book/index.html" target="_blank" rel="noopener" data-testid="book-link">"The book"</a>
        </header>
        <main>
        <ModelPanel hub repo weights kv_dtype/>
        <DemoOffer page/>
        <ErrorBanner/>
        {move || match page.get() {
            Page::Home => view! { <HomePage page/> }.into_any(),
            Page::Playground => view! { <PlaygroundPage/> }.into_any(),
            Page::Kv => view! { <KvCachePage/> }.into_any(),
            Page::Batching => view! { <BatchingPage/> }.into_any(),
            Page::Speculative => view! { <SpeculativePage hub/> }.into_any(),
            Page::Beam => view! { <BeamPage/> }.into_any(),
            Page::Internals => view! { <InternalsPage/> }.into_any(),
        }}
        </main>
    }
}

/// Which engine computes the pages: this tab's (WebGPU), or the native one when
/// `inferlab app` served the page (the default there). Elsewhere there is only the tab's.
#[component]
fn EngineSwitch() -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let native = move || engine.native.get().unwrap_or_else(|| "this machine".into());
    let on_change = move |ev: ev::Event| {
        engine.switch(if event_target_value(&ev) == "native" { EngineKind::Native } else { EngineKind::Tab })
    };
    native_token().is_some().then(|| {
        view! {
            <label class="engine" data-testid="engine" title=move || format!("native engine: {}", native())
                data-kind=move || if engine.kind.get() == EngineKind::Native { "native" } else { "tab" }>
                "engine "
                <select data-testid="engine-switch" on:change=on_change disabled=move || engine.busy()>
                    <option value="native" selected=move || engine.kind.get() == EngineKind::Native>{move || format!("native ({})", native())}</option>
                    <option value="tab" selected=move || engine.kind.get() == EngineKind::Tab>"this tab (WebGPU)"</option>
                </select>
            </label>
        }
    })
}

/// While no model is loaded (first visit, or the hub could not be reached), every page but the
/// Start page (which has its own) leads to the offline demo pair: one click, no network.
#[component]
fn DemoOffer(page: RwSignal<Page>) -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let load_demo = move |_| engine.load_demo();
    move || {
        if page.get() == Page::Home {
            return None;
        }
        let reason = match engine.status.get() {
            ModelStatus::Idle(_) => "No model loaded yet. Models from the hub are large downloads (gpt2: 550 MB);",
            ModelStatus::Failed(_) => "The model could not be loaded (no network, or the hub is unreachable?).",
            _ => return None,
        };
        Some(view! {
            <div class="demo-offer" data-testid="demo-offer">
                <span>{reason}" The demo pair needs no network: two small GPT-2s with GPT-2's tokenizer, trained on Rust sources, that come with this page — a target and the draft that speculates for it."</span>
                <button on:click=load_demo data-testid="demo-offer-load">"Start with the demo pair"</button>
            </div>
        })
    }
}

/// The last job error, dismissable.
#[component]
fn ErrorBanner() -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    move || {
        engine.error.get().map(|e| {
            view! {
                <div class="error" data-testid="error">
                    {e}
                    <button on:click=move |_| engine.error.set(None)>"dismiss"</button>
                </div>
            }
        })
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A select of the types a model's weights or KV cache can be held in, applied at its next load.
#[component]
fn DtypeChoice<T>(
    label: &'static str,
    title: &'static str,
    testid: &'static str,
    options: &'static [T],
    value: RwSignal<T>,
) -> impl IntoView
where
    T: Copy + FromStr + Display + Send + Sync + 'static,
{
    view! {
        <label title=title>{label}
            <select on:change=move |ev| if let Ok(v) = event_target_value(&ev).parse() { value.set(v) } prop:value=move || value.get().to_string() data-testid=testid>
                {options.iter().map(|o| view! { <option value=o.to_string()>{o.to_string()}</option> }).collect_view()}
            </select>
        </label>
    }
}

/// Choose and load a model; shows progress and the model's status.
#[component]
fn ModelPanel(
    hub: RwSignal<String>,
    repo: RwSignal<String>,
    weights: RwSignal<WeightDtype>,
    kv_dtype: RwSignal<KvDtype>,
) -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let kv_f16 = move || kv_dtype.get() == KvDtype::F16;
    let load_hub = move |_| {
        engine.send(
            &ToEngine::Load(ModelSource::Hub {
                hub: hub.get(),
                repo: repo.get(),
                weights: weights.get(),
                kv_f16: kv_f16(),
            }),
            &[],
        )
    };
    let load_demo = move |_| engine.load_demo();
    let load_files = move |files: Vec<File>| {
        if !files.is_empty() {
            engine.send(&ToEngine::Load(ModelSource::Files { weights: weights.get(), kv_f16: kv_f16() }), &files);
        }
    };
    let on_pick = move |ev: ev::Event| {
        let input: HtmlInputElement = event_target(&ev);
        load_files(picked_files(input.files()));
    };
    let on_drop = move |ev: ev::DragEvent| {
        ev.prevent_default();
        load_files(picked_files(ev.data_transfer().and_then(|d| d.files())));
    };
    let status_text = move || match engine.status.get() {
        ModelStatus::Starting => "starting the engine worker…".to_string(),
        ModelStatus::NoWebGpu(_) => "WebGPU unavailable".to_string(),
        ModelStatus::Idle(_) => "no model loaded".to_string(),
        ModelStatus::Loading { stage } => format!("loading: {stage}"),
        ModelStatus::Failed(e) => format!("failed: {e}"),
        ModelStatus::Ready(info) => format!(
            "{} · {} layers × {} heads × {} · {:.1} M params{}{}{}{} · ready",
            info.name,
            info.config.n_layer,
            info.config.n_head,
            info.config.n_embd,
            info.params as f64 / 1e6,
            if info.weights == WeightDtype::F32 { String::new() } else { format!(" · {} weights", info.weights) },
            if info.kv_f16 { " · f16 KV cache" } else { "" },
            if info.from_cache { " · from cache" } else { "" },
            if info.kernels { "" } else { " · kernels off" },
        ),
    };
    let progress = move || {
        engine.download.get().filter(|_| matches!(engine.status.get(), ModelStatus::Loading { .. })).map(|d| {
            let percent = d.total.map(|t| 100.0 * d.loaded as f64 / t.max(1) as f64);
            view! {
                <div class="progress">
                    <progress max="100" value=percent.unwrap_or(0.0)></progress>
                    <span>
                        {format!(
                            "{}: {}{} {} · {:.1} MB/s{}",
                            d.file,
                            megabytes(d.loaded),
                            d.total.map(|t| format!(" of {}", megabytes(t))).unwrap_or_default(),
                            percent.map(|p| format!("({p:.0}%)")).unwrap_or_default(),
                            d.mb_per_s,
                            if d.from_cache { " · from cache" } else { "" },
                        )}
                    </span>
                </div>
            }
        })
    };
    let no_webgpu = move || match engine.status.get() {
        ModelStatus::NoWebGpu(detail) => Some(view! {
            <div class="fatal" data-testid="no-webgpu">
                <strong>"This browser cannot run the model: WebGPU is not available."</strong>
                <p>
                    "Use a recent Chrome or Edge (113 or newer) on a machine with a GPU driver, or Firefox Nightly / Safari Technology Preview with WebGPU enabled. "
                    "On Linux Chrome, enable chrome://flags/#enable-unsafe-webgpu (and #enable-vulkan), then reload."
                </p>
                <p class="detail">{detail}</p>
            </div>
        }),
        _ => None,
    };
    let busy = move || engine.busy() || matches!(engine.status.get(), ModelStatus::Starting | ModelStatus::NoWebGpu(_));
    view! {
        <section class="model-panel" on:dragover=|ev: ev::DragEvent| ev.prevent_default() on:drop=on_drop>
            {no_webgpu}
            <div class="row">
                <label>"Model "
                    <input list="offered" prop:value=move || repo.get() on:input=move |ev| repo.set(event_target_value(&ev)) data-testid="repo"/>
                    <datalist id="offered">{OFFERED.iter().map(|r| view! { <option value=*r/> }).collect_view()}</datalist>
                </label>
                <button on:click=load_hub disabled=busy data-testid="load-hub">{move || match engine.kind.get() {
                    EngineKind::Tab => "Load from hub",
                    EngineKind::Native => "Load folder or hub repo",
                }}</button>
                <DtypeChoice label="Weights " testid="weights-dtype" options=&[WeightDtype::F32, WeightDtype::F16, WeightDtype::Int8] value=weights
                    title="Converts the linear layers and the token table as they load: f16 halves their GPU memory, int8 (a scale per output) quarters it; the kernels widen them to f32 (no shader-f16 needed). The demo pair stays f32."/>
                <DtypeChoice label="KV dtype " testid="kv-dtype" options=&[KvDtype::F32, KvDtype::F16] value=kv_dtype
                    title="Holds the KV cache in f16 (keys and values rounded as they are stored): half its memory and half the bytes each attention step reads. The demo pair stays f32."/>
                <button on:click=load_demo disabled=busy data-testid="load-demo">"Demo pair (offline)"</button>
                <label class="file">"Local files "
                    <input type="file" multiple accept=".json,.safetensors" on:change=on_pick disabled=busy data-testid="file-input"/>
                </label>
            </div>
            <details class="settings">
                <summary>"Settings"</summary>
                <label>"Hub URL "
                    <input prop:value=move || hub.get() on:input=move |ev| hub.set(event_target_value(&ev)) data-testid="hub-url" size="40"/>
                </label>
                <p class="hint">{move || match engine.kind.get() {
                    EngineKind::Tab => "Files come from {hub}/{repo}/resolve/main/{file} and stay in the browser's Cache Storage. Or drop config.json, tokenizer.json and model.safetensors anywhere on this panel.",
                    EngineKind::Native => "The native engine loads a folder (type its path as the model) or a hub repo, downloaded once into its cache.",
                }}</p>
                <p class="hint" data-testid="adapter">{move || engine.adapter.get().map(|a| match engine.kind.get() {
                    EngineKind::Tab => format!("WebGPU adapter: {a}"),
                    EngineKind::Native => format!("native device: {a}"),
                })}</p>
                <p class="hint" data-testid="wasm-memory">{move || engine.wasm_memory_bytes.get().map(|b| {
                    format!("The engine worker's wasm memory: {} (it keeps the largest it grew to while loading)", megabytes(b))
                })}</p>
            </details>
            {progress}
            <p class="status" data-testid="model-status">{status_text}</p>
        </section>
    }
}
