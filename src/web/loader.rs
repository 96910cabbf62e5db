//! Getting model files into the worker: from a Hugging Face–style hub (streamed, with
//! progress, and kept in Cache Storage so a reload is instant) or from `File`s the user picked.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, ReadableStreamDefaultReader, Response, WorkerGlobalScope};
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
    let detail = e.as_string().or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message()))).unwrap_or_else(|| format!("{e:?}"));
    format!("{context}: {detail}")
}

async fn open_cache() -> Option<Cache> {
    // Cache Storage needs a secure context (https or localhost); without it we just download.
    let caches = scope().caches().ok()?;
    JsFuture::from(caches.open(CACHE_NAME)).await.ok()?.dyn_into().ok()
}

/// Downloads one hub file (or takes it from Cache Storage), reporting progress as it streams.
/// Returns the bytes and whether they came from the cache.
pub async fn fetch_hub_file(url: &str, file: &str, mut on_progress: impl FnMut(Progress)) -> Result<(Vec<u8>, bool), String> {
    let cache = open_cache().await;
    if let Some(cache) = &cache {
        let hit = JsFuture::from(cache.match_with_str(url)).await.map_err(|e| js_error("reading Cache Storage", e))?;
        if let Ok(response) = hit.dyn_into::<Response>() {
            let bytes = read_body(response, file, true, &mut on_progress).await?;
            return Ok((bytes, true));
        }
    }
    let response: Response = JsFuture::from(scope().fetch_with_str(url))
        .await
        .map_err(|e| js_error(&format!("could not reach {url} (is the hub URL right, and does it allow CORS?)"), e))?
        .unchecked_into();
    if !response.ok() {
        return Err(format!("{url} answered HTTP {} {}", response.status(), response.status_text()));
    }
    let bytes = read_body(response, file, false, &mut on_progress).await?;
    if let Some(cache) = &cache {
        // A failed put (quota) only costs the next reload a download.
        let copy = Uint8Array::from(bytes.as_slice());
        if let Ok(stored) = Response::new_with_opt_buffer_source(Some(&copy)) {
            let _ = JsFuture::from(cache.put_with_str(url, &stored)).await;
        }
    }
    Ok((bytes, false))
}

/// Reads a response body chunk by chunk so the page can show bytes, % and MB/s.
async fn read_body(response: Response, file: &str, from_cache: bool, on_progress: &mut impl FnMut(Progress)) -> Result<Vec<u8>, String> {
    let total = response.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<u64>().ok());
    let body = response.body().ok_or_else(|| format!("{file}: the response has no body"))?;
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::with_capacity(total.unwrap_or(0) as usize);
    let start = Instant::now();
    let mut last_report = 0.0;
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| js_error(&format!("downloading {file}"), e))?;
        let done = Reflect::get(&chunk, &"done".into()).map(|d| d.is_truthy()).unwrap_or(true);
        if !done {
            let value: Uint8Array = Reflect::get(&chunk, &"value".into()).map_err(|e| js_error(file, e))?.unchecked_into();
            bytes.extend_from_slice(&value.to_vec());
        }
        let seconds = start.elapsed().as_secs_f64();
        if done || seconds - last_report > 0.1 {
            last_report = seconds;
            let mb_per_s = if seconds > 0.0 { bytes.len() as f64 / 1e6 / seconds } else { 0.0 };
            on_progress(Progress { file, loaded: bytes.len() as u64, total, mb_per_s, from_cache });
        }
        if done {
            return Ok(bytes);
        }
    }
}

/// The bytes of a file the user picked or dropped.
pub async fn read_file(file: &web_sys::File) -> Result<Vec<u8>, String> {
    let buffer = JsFuture::from(file.array_buffer()).await.map_err(|e| js_error(&format!("reading {}", file.name()), e))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}
