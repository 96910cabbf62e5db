//! Fuzzing what comes from outside, with proptest: the model loader (config.json, the
//! safetensors header and its data) and the completions request parser. Inputs are the small
//! seed corpus in `tests/fuzz/` (a 1-layer, 4-wide model and three requests) mutated at random —
//! bytes flipped, inserted, cut, spliced, and JSON fields replaced by arbitrary JSON. The
//! property: a value or a clear error, never a panic; what the parser accepts keeps the
//! server's limits. `scripts/fuzz.sh` runs the same targets for longer.

use std::path::PathBuf;

use burn::tensor::Device;
use inferlab::engine::kv::KvCache;
use inferlab::engine::model::config::Gpt2Config;
use inferlab::engine::model::gpt2::{Gpt2, Logits};
use inferlab::engine::model::tokenizer::Tokenizer;
use inferlab::engine::model::weights::Gpt2Weights;
use inferlab::engine::step::Step;
use inferlab::native::serve::api::{self, MAX_LOGPROBS, MAX_N, ModelInfo};
use proptest::prelude::*;
use serde_json::Value;

fn corpus(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz").join(name)).expect("the seed corpus")
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Cut(usize, usize),
    /// Copies a slice of the input over another place in it.
    Splice(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Mutation::Cut(at, n)),
        (any::<usize>(), any::<usize>(), 1usize..32).prop_map(|(from, to, n)| Mutation::Splice(from, to, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip(at, b) if !bytes.is_empty() => bytes[at % len] ^= b,
            Mutation::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
            Mutation::Cut(at, n) if !bytes.is_empty() => {
                let at = at % len;
                bytes.drain(at..(at + n).min(bytes.len()));
            }
            Mutation::Splice(from, to, n) if !bytes.is_empty() => {
                let (from, to) = (from % len, to % len);
                let piece: Vec<u8> = bytes[from..(from + n).min(bytes.len())].to_vec();
                for (i, b) in piece.into_iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(to + i) {
                        *slot = b;
                    }
                }
            }
            _ => {}
        }
    }
    bytes
}

/// Loads a (mutated) model; when it loads, runs a forward over two tokens.
fn load_and_run(config: &[u8], weights: &[u8]) {
    let Ok(text) = std::str::from_utf8(config) else { return };
    let Ok(config) = Gpt2Config::from_json(text) else { return };
    let Ok(weights) = Gpt2Weights::from_safetensors(weights, &config) else { return };
    let device = Device::flex();
    let model = Gpt2::new(config, weights, &device).expect("checked weights load");
    let c = &model.config;
    let ids: Vec<u32> = vec![0, (c.vocab_size as u32).saturating_sub(1)];
    let len = ids.len().min(c.n_positions);
    let step = Step { batch: 1, len, real: vec![true; len], ids: ids[..len].to_vec(), positions: (0..len).collect() };
    let mut cache = KvCache::Stateless { window: None };
    let logits = model.forward(&step, &mut cache, Logits::All).expect("a model that loaded runs");
    assert_eq!(logits.dims()[2], c.vocab_size);
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (-3i64..300).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

const FIELDS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "logprobs",
    "echo",
    "best_of",
    "logit_bias",
];

fn model_info() -> ModelInfo {
    ModelInfo {
        name: "gpt2-tiny".into(),
        context: 256,
        vocab: 50257,
        eos_token_ids: vec![50256],
        block_size: 16,
        num_blocks: 64,
    }
}

/// The real GPT-2 tokenizer, read once.
fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let root = std::env::var_os("INFERLAB_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2"));
        Tokenizer::from_bytes(&std::fs::read(root.join("tokenizer/tokenizer.json")).unwrap()).unwrap()
    })
}

/// What the parser accepted fits the server: non-empty prompts inside the context and the vocabulary, limits kept.
fn check_parse(body: &[u8], model: &ModelInfo, tokenizer: &Tokenizer) {
    match api::parse(body, model, tokenizer) {
        Err(e) => assert!(e.status.is_client_error() && !e.message.is_empty(), "{e:?}"),
        Ok(c) => {
            assert!(
                !c.prompts.is_empty()
                    && c.prompts.iter().all(|p| !p.is_empty() && p.len() + c.max_tokens <= model.context)
            );
            assert!(c.prompts.iter().flatten().all(|&id| (id as usize) < model.vocab));
            assert!((1..=MAX_N).contains(&c.n) && c.max_tokens >= 1 && c.logprobs.is_none_or(|k| k <= MAX_LOGPROBS));
            assert!(c.sampling.validate().is_ok());
            let blocks: usize =
                c.prompts.iter().map(|p| (p.len() + c.max_tokens).div_ceil(model.block_size) * c.n).sum();
            assert!(blocks <= model.num_blocks);
        }
    }
}

proptest! {
    // 2,000 cases each in the suite; `scripts/fuzz.sh` sets PROPTEST_CASES for longer runs (a
    // smaller figure cannot shorten the suite).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(0).max(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_loader_never_panics(mutations in prop::collection::vec(mutation(), 1..6), which in 0..3u8) {
        let (config, weights) = (corpus("config.json"), corpus("model.safetensors"));
        match which {
            0 => load_and_run(&mutate(config, &mutations), &weights),
            1 => load_and_run(&config, &mutate(weights, &mutations)),
            _ => load_and_run(&mutate(config, &mutations[..1]), &mutate(weights, &mutations[1..])),
        }
    }

    #[test]
    fn the_request_parser_never_panics(seed in 0..3usize, mutations in prop::collection::vec(mutation(), 0..6), field in 0..FIELDS.len(), value in json_value(), replace in any::<bool>()) {
        let lines: Vec<Vec<u8>> = corpus("requests.jsonl").split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
        let mut request: Value = serde_json::from_slice(&lines[seed % lines.len()]).unwrap();
        if replace {
            request[FIELDS[field]] = value;
        }
        let body = mutate(request.to_string().into_bytes(), &mutations);
        check_parse(&body, &model_info(), tokenizer());
    }
}
