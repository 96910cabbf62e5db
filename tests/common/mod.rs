//! Shared by the integration tests: where the fixtures are, the golden schema, the devices
//! to test on, and tolerant comparisons. Tests are written over the fixture *schema*: every
//! sub-folder of the fixtures with a `golden.json` is checked.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::Device;
use inferlab::native::model_dir::{LoadedModel, load};
use serde::Deserialize;

/// `$INFERLAB_FIXTURES`, else the copy in the repository (`tests/fixtures/gpt2`).
pub fn fixtures_root() -> PathBuf {
    std::env::var_os("INFERLAB_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2"))
}

/// Every model folder that carries goldens.
pub fn model_dirs() -> Vec<PathBuf> {
    let root = fixtures_root();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("fixtures not found at {} ({e}); set INFERLAB_FIXTURES", root.display()))
        .map(|entry| entry.expect("readable fixture folder").path())
        .filter(|p| p.join("golden.json").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no model folder with golden.json under {}", root.display());
    dirs
}

/// The devices every parity check runs on: the CPU device, and wgpu (lavapipe on a machine
/// without a GPU). Set `INFERLAB_SKIP_WGPU=1` only where no Vulkan driver can be installed.
pub fn devices() -> Vec<(&'static str, Device)> {
    let mut devices = vec![("cpu", Device::flex())];
    devices.extend(wgpu().map(|device| ("wgpu", device)));
    devices
}

/// The wgpu device, or `None` under `INFERLAB_SKIP_WGPU`, which the test then says on stderr
/// (it names itself). Under CI (`CI` set) nothing may be skipped: the skip fails the test.
pub fn wgpu() -> Option<Device> {
    static WGPU: OnceLock<Device> = OnceLock::new();
    if std::env::var_os("INFERLAB_SKIP_WGPU").is_some() {
        let test = std::thread::current().name().unwrap_or("this test").to_string();
        assert!(std::env::var_os("CI").is_none(), "{test}: CI must run everything, but INFERLAB_SKIP_WGPU is set");
        eprintln!("SKIPPED: the wgpu half of {test} (INFERLAB_SKIP_WGPU is set)");
        return None;
    }
    Some(
        WGPU.get_or_init(|| {
            Device::wgpu_options().init().unwrap_or_else(|e| {
                panic!("no wgpu adapter ({e:?}); install mesa-vulkan-drivers or set INFERLAB_SKIP_WGPU=1")
            })
        })
        .clone(),
    )
}

/// A golden JSON file of a fixture model folder, read against its schema.
fn read_golden<T: serde::de::DeserializeOwned>(dir: &std::path::Path, name: &str) -> T {
    let file = dir.join(name);
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: does not follow its schema: {e}", file.display()))
}

/// A fixture model folder's goldens.
pub fn golden(dir: &std::path::Path) -> Golden {
    read_golden(dir, "golden.json")
}

/// Each fixture model on each device, with its goldens.
pub fn cases() -> Vec<Case> {
    let mut cases = vec![];
    for dir in model_dirs() {
        let golden = golden(&dir);
        for (device_name, device) in devices() {
            let loaded = load(&dir, &device).unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
            cases.push(Case {
                label: format!("{} on {device_name}", golden.model),
                dir: dir.clone(),
                golden: golden.clone(),
                loaded,
            });
        }
    }
    cases
}

pub struct Case {
    pub label: String,
    pub dir: PathBuf,
    pub golden: Golden,
    pub loaded: LoadedModel,
}

impl Case {
    /// A full-vocabulary tensor from `golden_logits.safetensors`.
    pub fn golden_tensor(&self, name: &str) -> Vec<f32> {
        read_f32(&self.dir.join(&self.golden.side_file), name)
    }

    pub fn prompt(&self, name: &str) -> &PromptGolden {
        self.golden.prompts.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no prompt {name}"))
    }
}

#[derive(Deserialize, Clone)]
pub struct Golden {
    pub model: String,
    pub side_file: String,
    pub prompts: Vec<PromptGolden>,
    pub batched_greedy: BatchedGolden,
    pub eos_stop: EosStop,
    pub teacher_forced: TeacherForced,
    pub past_key_values: PastKeyValues,
    pub assisted_greedy_with_draft: Option<Assisted>,
}

#[derive(Deserialize, Clone)]
pub struct PromptGolden {
    pub name: String,
    pub text: String,
    pub input_ids: Vec<u32>,
    pub last_logits: LastLogits,
    pub positions: Vec<Top5>,
    pub all_logits: Option<TensorRef>,
    pub greedy: Greedy,
    pub greedy_no_cache: Greedy,
    pub beam: BeamGolden,
}

#[derive(Deserialize, Clone)]
pub struct LastLogits {
    pub tensor: String,
    pub top5_ids: Vec<u32>,
    pub top5_values: Vec<f64>,
}

#[derive(Deserialize, Clone)]
pub struct TensorRef {
    pub tensor: String,
}

#[derive(Deserialize, Clone)]
pub struct Top5 {
    pub top5_ids: Vec<u32>,
    pub top5_values: Vec<f64>,
    pub sum: f64,
    pub l2: f64,
}

#[derive(Deserialize, Clone)]
pub struct Greedy {
    pub new_ids: Vec<u32>,
}

#[derive(Deserialize, Clone)]
pub struct BatchedGolden {
    pub prompts: Vec<String>,
    pub pad_token_id: u32,
    pub max_new_tokens: usize,
    pub input_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u8>>,
    pub prefill_position_ids: Vec<Vec<usize>>,
    pub new_ids: Vec<Vec<u32>>,
}

#[derive(Deserialize, Clone)]
pub struct EosStop {
    pub prompt: String,
    pub eos_a: EosCase,
    pub eos_b: EosCase,
    pub batched_eos_a: BatchedEos,
}

#[derive(Deserialize, Clone)]
pub struct EosCase {
    pub eos_token_id: u32,
    pub greedy: EosGreedy,
    pub beam: BeamGolden,
}

/// `generate(num_beams, num_return_sequences, …)`; rows are padded with the pad id after a
/// hypothesis finished (`finished_lengths` says where, `null` = ran to the end).
#[derive(Deserialize, Clone)]
pub struct BeamGolden {
    pub params: BeamParams,
    pub new_ids: Vec<Vec<u32>>,
    pub sequences_scores: Vec<f64>,
    #[serde(default)]
    pub finished_lengths: Option<Vec<Option<usize>>>,
}

impl BeamGolden {
    /// Each returned sequence's new ids without the padding.
    pub fn unpadded(&self) -> Vec<Vec<u32>> {
        let lengths = self.finished_lengths.clone().unwrap_or_else(|| vec![None; self.new_ids.len()]);
        self.new_ids.iter().zip(lengths).map(|(ids, len)| ids[..len.unwrap_or(ids.len())].to_vec()).collect()
    }
}

#[derive(Deserialize, Clone)]
pub struct BeamParams {
    pub num_beams: usize,
    pub num_return_sequences: usize,
    pub max_new_tokens: usize,
    pub length_penalty: f32,
    pub early_stopping: serde_json::Value,
    pub no_repeat_ngram_size: usize,
    pub eos_token_id: u32,
}

#[derive(Deserialize, Clone)]
pub struct Assisted {
    pub draft_model: String,
    pub results: Vec<AssistedResult>,
}

#[derive(Deserialize, Clone)]
pub struct AssistedResult {
    pub prompt: String,
    pub new_ids: Vec<u32>,
}

#[derive(Deserialize, Clone)]
pub struct EosGreedy {
    pub max_new_tokens: usize,
    pub new_ids: Vec<u32>,
}

#[derive(Deserialize, Clone)]
pub struct BatchedEos {
    pub eos_token_id: u32,
    pub input_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u8>>,
    pub new_ids: Vec<Vec<u32>>,
}

#[derive(Deserialize, Clone)]
pub struct TeacherForced {
    pub prompt_ids: Vec<u32>,
    pub continuation_ids: Vec<u32>,
    pub token_logprobs: Vec<f64>,
}

#[derive(Deserialize, Clone)]
pub struct PastKeyValues {
    pub input_ids: Vec<u32>,
    pub layers: Vec<LayerKv>,
}

#[derive(Deserialize, Clone)]
pub struct LayerKv {
    pub key_shape: Vec<usize>,
    pub key_sum: f64,
    pub key_l2: f64,
    pub value_sum: f64,
    pub value_l2: f64,
}

/// Largest absolute difference between two equally long vectors.
pub fn max_abs_diff(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len(), "lengths differ");
    ours.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// The five largest values of a row with their ids, descending.
pub fn top5(row: &[f32]) -> Vec<(u32, f32)> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    order.into_iter().take(5).map(|i| (i as u32, row[i])).collect()
}

/// Checks a row against a golden top-5 (ids exact, except swaps of near-equal values),
/// and its sum and L2 norm, with the fixture README's tolerances.
pub fn check_row(label: &str, row: &[f32], golden: &Top5) {
    let ours = top5(row);
    for (k, &(id, value)) in ours.iter().enumerate() {
        let reference = golden.top5_values[k];
        assert!((f64::from(value) - reference).abs() <= 1e-4, "{label}: top-5 value {k}: {value} vs {reference}");
        let swapped = golden
            .top5_ids
            .iter()
            .zip(&golden.top5_values)
            .any(|(&gid, &gv)| gid == id && (gv - reference).abs() < 1e-4);
        assert!(swapped, "{label}: top-5 id {k}: {id} vs {}", golden.top5_ids[k]);
    }
    let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
    let l2: f64 = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
    assert!((sum - golden.sum).abs() <= 1e-2, "{label}: sum {sum} vs {}", golden.sum);
    assert!(((l2 - golden.l2) / golden.l2).abs() <= 1e-5, "{label}: l2 {l2} vs {}", golden.l2);
}

/// Strips left padding from rows given with their attention masks.
pub fn unpad(ids: &[Vec<u32>], mask: &[Vec<u8>]) -> Vec<Vec<u32>> {
    ids.iter()
        .zip(mask)
        .map(|(row, m)| row.iter().zip(m).filter(|(_, keep)| **keep == 1).map(|(&id, _)| id).collect())
        .collect()
}

/// `golden_extra.json`: transformers' sliding window (a banded causal mask), the exact
/// distributions `generate(do_sample=True)` draws from, and beam search's options.
#[derive(Deserialize, Clone)]
pub struct GoldenExtra {
    pub sliding_window: Vec<WindowGolden>,
    pub sampling: Vec<SamplingGolden>,
    pub beam_variants: Vec<BeamVariant>,
}

#[derive(Deserialize, Clone)]
pub struct WindowGolden {
    pub prompt: String,
    pub window: usize,
    pub prompt_ids: Vec<u32>,
    pub last_logits_key: String,
    pub greedy_new_ids: Vec<u32>,
    pub differs_from_full_attention: bool,
}

#[derive(Deserialize, Clone)]
pub struct SamplingGolden {
    pub prompt: String,
    pub name: String,
    pub prompt_ids: Vec<u32>,
    pub params: SamplingGoldenParams,
    pub probs_key: String,
    pub support_size: usize,
    pub processors: Vec<String>,
}

/// transformers' defaults where a setting leaves one out.
#[derive(Deserialize, Clone)]
pub struct SamplingGoldenParams {
    #[serde(default = "one")]
    pub temperature: f32,
    #[serde(default)]
    pub top_k: usize,
    #[serde(default = "one")]
    pub top_p: f32,
    #[serde(default = "one")]
    pub repetition_penalty: f32,
}

#[derive(Deserialize, Clone)]
pub struct BeamVariant {
    pub prompt: String,
    pub name: String,
    pub prompt_ids: Vec<u32>,
    pub params: BeamVariantParams,
    pub max_new_tokens: usize,
    pub new_ids: Vec<Vec<u32>>,
    pub sequences_scores: Vec<f64>,
}

/// `generate(num_beams=…)`'s arguments; absent ones take transformers' defaults (and the
/// fixture's `generation_config.json`: EOS 50256).
#[derive(Deserialize, Clone)]
pub struct BeamVariantParams {
    pub num_beams: usize,
    #[serde(default = "one_usize")]
    pub num_return_sequences: usize,
    #[serde(default = "one")]
    pub length_penalty: f32,
    #[serde(default = "es_false")]
    pub early_stopping: serde_json::Value,
    #[serde(default)]
    pub no_repeat_ngram_size: usize,
}

fn one() -> f32 {
    1.0
}

fn one_usize() -> usize {
    1
}

fn es_false() -> serde_json::Value {
    serde_json::Value::Bool(false)
}

impl Case {
    pub fn extra(&self) -> GoldenExtra {
        golden_extra(&self.dir)
    }

    /// `golden_beam_eos.json`: beam searches whose hypotheses end on a token the model emits.
    pub fn beam_eos(&self) -> Vec<BeamEosCase> {
        read_golden::<BeamEosGolden>(&self.dir, "golden_beam_eos.json").cases
    }

    /// A float32 tensor from `golden_extra_logits.safetensors`.
    pub fn extra_tensor(&self, name: &str) -> Vec<f32> {
        read_f32(&self.dir.join("golden_extra_logits.safetensors"), name)
    }
}

/// `golden_beam_eos.json` (written by `scripts/gen_beam_eos_goldens.py`).
#[derive(Deserialize)]
struct BeamEosGolden {
    cases: Vec<BeamEosCase>,
}

/// One `generate(num_beams=…)` call with its prompt; `golden.params` has every option.
#[derive(Deserialize, Clone)]
pub struct BeamEosCase {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    #[serde(flatten)]
    pub golden: BeamGolden,
}

/// A fixture model folder's `golden_extra.json`.
pub fn golden_extra(dir: &std::path::Path) -> GoldenExtra {
    read_golden(dir, "golden_extra.json")
}

/// Tensor `name` of a float32 safetensors file, flattened.
pub fn read_f32(file: &std::path::Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("golden tensors are safetensors");
    let view = tensors.tensor(name).unwrap_or_else(|_| panic!("{name} missing from {}", file.display()));
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name} is float32");
    view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// `golden_inspect.json` (written by `scripts/gen_inspect_goldens.py`).
#[derive(Deserialize)]
struct InspectGoldenFile {
    top: usize,
    cases: Vec<InspectGolden>,
}

/// transformers' view inside one prompt's forward pass.
#[derive(Deserialize, Clone)]
pub struct InspectGolden {
    pub prompt: String,
    pub input_ids: Vec<u32>,
    /// `output_attentions=True`: `[layer][head][query][key]`.
    pub attentions: Vec<Vec<Vec<Vec<f32>>>>,
    /// Each block's output norm, `[layer][position]`.
    pub residual_norms: Vec<Vec<f32>>,
    /// The logit lens after each block: top ids and probabilities, `[position][k]`.
    pub lens: Vec<LensGolden>,
    pub next_token: u32,
    /// The greedy next token's attention over the prompt and itself, `[layer][head][key]`.
    pub decode_attentions: Vec<Vec<Vec<f32>>>,
}

#[derive(Deserialize, Clone)]
pub struct LensGolden {
    pub top_ids: Vec<Vec<u32>>,
    pub top_probs: Vec<Vec<f32>>,
}

impl Case {
    /// `golden_inspect.json`: attentions, residual norms and the logit lens of every prompt.
    pub fn inspect_goldens(&self) -> Vec<InspectGolden> {
        let file: InspectGoldenFile = read_golden(&self.dir, "golden_inspect.json");
        assert_eq!(file.top, 5, "the lens goldens keep a top 5");
        file.cases
    }
}

/// `golden_scoring.json` (written by `scripts/gen_scoring_goldens.py`).
#[derive(Deserialize)]
pub struct ScoringGolden {
    pub top: usize,
    pub prompt_logprobs: Vec<PromptScores>,
    pub text: String,
    pub text_ids: Vec<u32>,
    pub perplexity: Vec<PerplexityGolden>,
}

/// Each token's log-probability after the ones before it (`None` for the first), with the
/// top 5 at each position.
#[derive(Deserialize)]
pub struct PromptScores {
    pub prompt: String,
    pub input_ids: Vec<u32>,
    pub logprobs: Vec<Option<TokenScore>>,
}

#[derive(Deserialize)]
pub struct TokenScore {
    pub logprob: f64,
    pub top_ids: Vec<u32>,
    pub top_logprobs: Vec<f64>,
}

/// transformers' strided perplexity of `text` for one window setting.
#[derive(Deserialize)]
pub struct PerplexityGolden {
    pub context: usize,
    pub stride: usize,
    pub perplexity: f64,
    pub nll: f64,
    pub tokens: usize,
    pub windows: usize,
}

pub fn golden_scoring(dir: &std::path::Path) -> ScoringGolden {
    read_golden(dir, "golden_scoring.json")
}
