//! Getting model files into the worker: from a Hugging Face–style hub (streamed, with
//! progress, and kept in Cache Storage so a reload is instant) or from `File`s the user picked.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    ByteLengthQueuingStrategy, Cache, QueuingStrategyInit, ReadableStream, ReadableStreamDefaultReader, Response,
    WorkerGlobalScope,
};
use web_time::Instant;

/// The files a GPT-2 checkpoint needs, in loading order.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// The Cache Storage bucket; bump the suffix if the stored layout ever changes.
const CACHE_NAME: &str = "inferlab-models-v1";

/// Bytes received so far of one file.
pub struct Progress<'a> {
    pub file: &'a str,
    pub loaded: u64,
    pub total: Option<u64>,
    pub mb_per_s: f64,
    pub from_cache: bool,
}

/// The hub's URL layout: `{hub}/{repo}/resolve/main/{file}`.
pub fn hub_url(hub: &str, repo: &str, file: &str) -> String {
    format!("{}/{}/resolve/main/{file}", hub.trim_end_matches('/'), repo.trim_matches('/'))
}

fn scope() -> WorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn js_error(context: &str, e: JsValue) -> String {
    let detail = e
        .as_string()
        .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| format!("{e:?}"));
    format!("{context}: {detail}")
}

async fn open_cache() -> Option<Cache> {
    // Cache Storage needs a secure context (https or localhost); without it we just download.
    let caches = scope().caches().ok()?;
    JsFuture::from(caches.open(CACHE_NAME)).await.ok()?.dyn_into().ok()
}

/// Opens one hub file: from Cache Storage, or from the network (then `from_cache` is false).
async fn open_hub_file(url: &str, cache: Option<&Cache>) -> Result<(Response, bool), String> {
    if let Some(cache) = cache {
        let hit = JsFuture::from(cache.match_with_str(url)).await.map_err(|e| js_error("reading Cache Storage", e))?;
        if let Ok(response) = hit.dyn_into::<Response>() {
            return Ok((response, true));
        }
    }
    let response: Response = JsFuture::from(scope().fetch_with_str(url))
        .await
        .map_err(|e| js_error(&format!("could not reach {url} (is the hub URL right, and does it allow CORS?)"), e))?
        .unchecked_into();
    if !response.ok() {
        return Err(format!("{url} answered HTTP {} {}", response.status(), response.status_text()));
    }
    Ok((response, false))
}

/// Downloads one hub file (or takes it from Cache Storage), reporting progress as it streams.
/// Returns the bytes and whether they came from the cache.
pub async fn fetch_hub_file(
    url: &str,
    file: &str,
    on_progress: impl FnMut(Progress),
) -> Result<(Vec<u8>, bool), String> {
    let mut bytes = vec![];
    let from_cache = stream_hub_file(url, file, on_progress, |chunk| {
        bytes.extend_from_slice(chunk);
        Ok(())
    })
    .await?;
    Ok((bytes, from_cache))
}

/// Streams one hub file chunk by chunk into `on_chunk` (which never sees the whole file at
/// once), from Cache Storage or the network; a download is copied into the cache on the way.
/// Returns whether it came from the cache.
pub async fn stream_hub_file(
    url: &str,
    file: &str,
    mut on_progress: impl FnMut(Progress),
    on_chunk: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<bool, String> {
    let cache = open_cache().await;
    let (response, from_cache) = open_hub_file(url, cache.as_ref()).await?;
    let copy = match &cache {
        Some(cache) if !from_cache => CacheCopy::start(cache, url, &response),
        _ => None,
    };
    let total = response.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<u64>().ok());
    let body = response.body().ok_or_else(|| format!("{file}: the response has no body"))?;
    let read = read_stream(body, total, file, from_cache, copy.as_ref(), &mut on_progress, on_chunk).await;
    if let Some(copy) = copy {
        copy.end(read.is_ok()).await;
    }
    read.map(|()| from_cache)
}

/// The copy of a download that goes into Cache Storage, fed each chunk after we took it. Not
/// `Response.clone()`: that tees the body, and the cache, the faster reader, would make the
/// slower one (us, uploading to the GPU) queue the whole file in memory. The other way round,
/// a download faster than Cache Storage writes (a local hub) queued most of a model's chunks in
/// the tab, and the load then ended waiting for the cache: so the download waits while the copy holds more than
/// [`COPY_QUEUE_BYTES`].
struct CacheCopy {
    controller: JsValue,
    stored: JsFuture,
}

impl CacheCopy {
    /// Starts `cache.put(url)` from a stream we fill; None if the browser refuses one.
    fn start(cache: &Cache, url: &str, response: &Response) -> Option<Self> {
        let controller = std::rc::Rc::new(std::cell::RefCell::new(JsValue::UNDEFINED));
        let slot = controller.clone();
        let source = js_sys::Object::new();
        // ReadableStream's constructor calls `start` at once, handing over its controller.
        let start = wasm_bindgen::closure::Closure::once_into_js(move |c: JsValue| *slot.borrow_mut() = c);
        Reflect::set(&source, &"start".into(), &start).ok()?;
        let strategy = ByteLengthQueuingStrategy::new(&QueuingStrategyInit::new(COPY_QUEUE_BYTES)).ok()?;
        let stream = ReadableStream::new_with_underlying_source_and_strategy(&source, strategy.unchecked_ref()).ok()?;
        let init = web_sys::ResponseInit::new();
        init.set_headers_headers(&response.headers());
        let copy = Response::new_with_opt_readable_stream_and_init(Some(&stream), &init).ok()?;
        let stored = JsFuture::from(cache.put_with_str(url, &copy));
        let controller = controller.borrow().clone();
        Some(Self { controller, stored })
    }

    fn call(&self, method: &str, arg: &JsValue) {
        if let Ok(f) = Reflect::get(&self.controller, &method.into())
            .and_then(|f| f.dyn_into::<js_sys::Function>().map_err(JsValue::from))
        {
            let _ = f.call1(&self.controller, arg);
        }
    }

    fn push(&self, chunk: &Uint8Array) {
        self.call("enqueue", chunk);
    }

    /// Waits while the copy holds more than [`COPY_QUEUE_BYTES`] that Cache Storage has not
    /// taken yet (its `desiredSize` below 0; none once it closed or failed). A cache that takes
    /// nothing for a minute is given up: the load goes on, uncached.
    async fn wait_for_room(&self) {
        const TICK_MS: i32 = 10;
        let behind = || {
            Reflect::get(&self.controller, &"desiredSize".into())
                .ok()
                .and_then(|v| v.as_f64())
                .is_some_and(|room| room < 0.0)
        };
        for _ in 0..60_000 / TICK_MS {
            if !behind() {
                return;
            }
            let tick = js_sys::Promise::new(&mut |resolve, _| {
                let _ = scope().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, TICK_MS);
            });
            let _ = JsFuture::from(tick).await;
        }
        self.call("error", &"Cache Storage took nothing for a minute".into());
    }

    /// Closes the copy (stored) or, when the download failed or was refused, errors it (the
    /// cache keeps nothing). A failed put (quota) only costs the next reload a download.
    async fn end(self, complete: bool) {
        if complete {
            self.call("close", &JsValue::UNDEFINED);
        } else {
            self.call("error", &"the download did not complete".into());
        }
        let _ = self.stored.await;
    }
}

/// Bytes of a download that may wait in memory for Cache Storage.
const COPY_QUEUE_BYTES: f64 = 32e6;

/// Reads a stream chunk by chunk so the page can show bytes, % and MB/s.
async fn read_stream(
    body: ReadableStream,
    total: Option<u64>,
    file: &str,
    from_cache: bool,
    copy: Option<&CacheCopy>,
    on_progress: &mut impl FnMut(Progress),
    mut on_chunk: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let start = Instant::now();
    let mut last_report = 0.0;
    let mut loaded = 0u64;
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| js_error(&format!("reading {file}"), e))?;
        let done = Reflect::get(&chunk, &"done".into()).map(|d| d.is_truthy()).unwrap_or(true);
        if !done {
            let value: Uint8Array =
                Reflect::get(&chunk, &"value".into()).map_err(|e| js_error(file, e))?.unchecked_into();
            if let Some(copy) = copy {
                copy.push(&value);
            }
            let value = value.to_vec();
            loaded += value.len() as u64;
            if let Err(e) = on_chunk(&value) {
                let _ = reader.cancel();
                return Err(e);
            }
            if let Some(copy) = copy {
                copy.wait_for_room().await;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        if done || seconds - last_report > 0.1 {
            last_report = seconds;
            let mb_per_s = if seconds > 0.0 { loaded as f64 / 1e6 / seconds } else { 0.0 };
            on_progress(Progress { file, loaded, total, mb_per_s, from_cache });
        }
        if done {
            return Ok(());
        }
    }
}

/// The bytes of a file the user picked or dropped.
pub async fn read_file(file: &web_sys::File) -> Result<Vec<u8>, String> {
    let buffer =
        JsFuture::from(file.array_buffer()).await.map_err(|e| js_error(&format!("reading {}", file.name()), e))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// Streams a picked or dropped file chunk by chunk into `on_chunk`, with progress.
pub async fn stream_file(
    file: &web_sys::File,
    mut on_progress: impl FnMut(Progress),
    on_chunk: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let name = file.name();
    read_stream(file.stream(), Some(file.size() as u64), &name, false, None, &mut on_progress, on_chunk).await
}
