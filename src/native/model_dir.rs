//! A model folder in HF layout (`config.json`, `model.safetensors`, `tokenizer.json`) → a
//! model on a device and its tokenizer. `--model` takes such a folder or a hub repo id.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::Device;

use super::hub;
use crate::engine::model::config::Gpt2Config;
use crate::engine::model::gpt2::Gpt2;
use crate::engine::model::tokenizer::Tokenizer;
use crate::engine::model::weights::Gpt2Weights;

pub struct LoadedModel {
    pub model: Gpt2,
    pub tokenizer: Tokenizer,
    pub dir: PathBuf,
}

/// A local folder if `model` is one, else a repo fetched from `hub` into the cache.
pub fn resolve(model: &str, hub_url: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        anyhow::bail!(
            "--model {model:?} is a file; give the folder that holds config.json, model.safetensors and tokenizer.json"
        );
    }
    if !hub::is_repo_id(model) {
        anyhow::bail!(
            "{model:?} is neither a model folder nor a hub repo id like openai-community/gpt2 (no folder is there)"
        );
    }
    hub::fetch_repo(hub_url, model, &hub::cache_root(), true)
        .with_context(|| format!("{model:?} is not a local folder, so it was fetched as a hub repo id"))
}

/// Reads and checks the three files of `dir`, and uploads the weights to `device`.
pub fn load(dir: &Path, device: &Device) -> Result<LoadedModel> {
    let config = read_config(dir)?;
    let tokenizer = Tokenizer::from_bytes(&read(dir, "tokenizer.json")?)
        .with_context(|| format!("in {}", dir.join("tokenizer.json").display()))?;
    Ok(LoadedModel { model: load_weights(dir, config, device)?, tokenizer, dir: dir.to_path_buf() })
}

/// Reads and checks `dir`'s config.json.
pub fn read_config(dir: &Path) -> Result<Gpt2Config> {
    let config_text = String::from_utf8(read(dir, "config.json")?).context("config.json is not UTF-8")?;
    Gpt2Config::from_json(&config_text).with_context(|| format!("in {}", dir.join("config.json").display()))
}

/// Reads `dir`'s model.safetensors, checks it against `config` and uploads it to `device`.
pub fn load_weights(dir: &Path, config: Gpt2Config, device: &Device) -> Result<Gpt2> {
    let weights = Gpt2Weights::from_safetensors(&read(dir, "model.safetensors")?, &config)
        .with_context(|| format!("in {}", dir.join("model.safetensors").display()))?;
    Ok(Gpt2::new(config, weights, device)?)
}

/// The bytes of `dir/file`, or an error naming the path.
pub fn read(dir: &Path, file: &str) -> Result<Vec<u8>> {
    let path = dir.join(file);
    fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// A model named on the command line: `random:NAME` (a seeded random model of a published
/// shape), a folder, or a hub repo id.
pub fn load_named(spec: &str, hub_url: &str, device: &Device, seed: u64) -> Result<Gpt2> {
    if let Some(name) = spec.strip_prefix("random:") {
        let config = Gpt2Config::named(name)?;
        let weights = Gpt2Weights::random(&config, seed);
        return Ok(Gpt2::new(config, weights, device)?);
    }
    let dir = resolve(spec, hub_url)?;
    Ok(load(&dir, device).with_context(|| format!("loading {spec}"))?.model)
}
