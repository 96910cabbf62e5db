//! Model files from a Hugging Face-style hub: `{hub}/{repo}/resolve/main/{file}`, downloaded
//! once into a cache directory with a progress bar, then reused. A file is written under a
//! temporary name and renamed when complete, so an interrupted download is never mistaken
//! for a cached one.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

pub const DEFAULT_HUB: &str = "https://huggingface.co";

/// The files a GPT-2 model needs.
pub const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// `$INFERLAB_CACHE`, else `$XDG_CACHE_HOME/inferlab`, else `~/.cache/inferlab`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("INFERLAB_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("inferlab")
}

/// Whether `s` looks like a hub repo id (`name` or `org/name`), not a path.
pub fn is_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// Where `repo`'s files are kept in `cache`.
pub fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// Makes sure `cache/models--org--name/` holds every model file, downloading what is missing.
pub fn fetch_repo(hub: &str, repo: &str, cache: &Path, progress: bool) -> Result<PathBuf> {
    if !is_repo_id(repo) {
        bail!("{repo:?} is neither a model folder nor a hub repo id like openai-community/gpt2");
    }
    let dir = repo_dir(cache, repo);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
    for file in MODEL_FILES {
        let target = dir.join(file);
        if target.exists() {
            continue;
        }
        let url = format!("{}/{repo}/resolve/main/{file}", hub.trim_end_matches('/'));
        download(&url, &target, progress).with_context(|| format!("downloading {url}"))?;
    }
    Ok(dir)
}

fn download(url: &str, target: &Path, progress: bool) -> Result<()> {
    let mut response = ureq::get(url).call().map_err(|e| anyhow::anyhow!("{e}"))?;
    let total =
        response.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let bar = if progress { ProgressBar::new(total.unwrap_or(0)) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg:>20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let partial = target.with_extension("part");
    let mut out = fs::File::create(&partial).with_context(|| format!("cannot write {}", partial.display()))?;
    let mut body = response.body_mut().as_reader();
    let mut buffer = vec![0u8; 1 << 16];
    let mut written = 0u64;
    loop {
        let n = body.read(&mut buffer).context("the download was interrupted")?;
        if n == 0 {
            break;
        }
        out.write_all(&buffer[..n])?;
        written += n as u64;
        bar.set_position(written);
    }
    // (A gzip-encoded body may decode to more bytes than its Content-Length, never fewer.)
    if let Some(total) = total
        && written < total
    {
        bail!("received {written} of {total} bytes");
    }
    out.sync_all()?;
    fs::rename(&partial, target)?;
    bar.finish();
    Ok(())
}
