//! The OpenAI completions request, read field by field: every field is checked against its
//! type and range, and the model's limits, and a bad one is answered with OpenAI's error shape
//! (`{"error": {"message", "type", "param", "code"}}`) naming the field. Nothing here touches
//! the engine: the result is plain token ids and options.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::engine::decode::sampling::SamplingParams;
use crate::engine::model::tokenizer::Tokenizer;

/// Most prompts one request may carry, choices per prompt, stop strings, top log-probs.
pub const MAX_PROMPTS: usize = 64;
pub const MAX_N: usize = 16;
pub const MAX_STOP: usize = 4;
pub const MAX_LOGPROBS: usize = 5;
/// OpenAI's default `max_tokens` for completions.
pub const DEFAULT_MAX_TOKENS: usize = 16;

const KNOWN_FIELDS: &[&str] = &[
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
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "return_token_ids",
    "ignore_eos",
    "user",
    "best_of",
    "suffix",
    "logit_bias",
];

/// What the server must know about its model to check a request.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The name clients use in `model`.
    pub name: String,
    pub context: usize,
    pub vocab: usize,
    pub eos_token_ids: Vec<u32>,
    pub block_size: usize,
    pub num_blocks: usize,
}

/// A checked completions request.
#[derive(Debug, Clone)]
pub struct Completion {
    pub prompts: Vec<Vec<u32>>,
    pub max_tokens: usize,
    /// The seed is the base: choice `i` draws from `seed + i`.
    pub sampling: SamplingParams,
    pub n: usize,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: Option<usize>,
    pub echo: bool,
    pub return_token_ids: bool,
    pub ignore_eos: bool,
}

/// An error in OpenAI's shape with its HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: &'static str,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code }
    }

    /// A 400 about one field.
    pub fn invalid(param: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_string()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", code, message)
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

type Checked<T> = std::result::Result<T, ApiError>;

/// A request body's JSON object, or the error for one that is not.
pub fn json_object(body: &[u8]) -> Checked<Map<String, Value>> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(fields) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_type",
            "the body must be a JSON object",
        ));
    };
    Ok(fields)
}

/// Reads and checks a request body.
pub fn parse(body: &[u8], model: &ModelInfo, tokenizer: &Tokenizer) -> Checked<Completion> {
    let fields = json_object(body)?;
    if let Some(unknown) = fields.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            unknown,
            "unknown_parameter",
            format!("unrecognized request argument: {unknown}"),
        ));
    }
    let f = Fields(&fields);
    let name = f
        .string("model")?
        .ok_or_else(|| ApiError::invalid("model", "missing_field", "you must provide a model parameter"))?;
    if name != model.name {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            ..ApiError::invalid(
                "model",
                "model_not_found",
                format!("the model {name:?} does not exist; this server serves {:?}", model.name),
            )
        });
    }
    unsupported(&f)?;
    let prompts = prompts(fields.get("prompt"), model, tokenizer)?;
    let echo = f.boolean("echo")?.unwrap_or(false);
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let room = model.context.saturating_sub(longest);
    // `max_tokens: 0` with `echo` scores the prompt without generating (OpenAI's convention).
    let least = if echo { 0 } else { 1 };
    let max_tokens = match f.integer("max_tokens", i64::MIN, i64::MAX)? {
        None if DEFAULT_MAX_TOKENS <= room => DEFAULT_MAX_TOKENS,
        None => {
            return Err(ApiError::invalid(
                "max_tokens",
                "context_length_exceeded",
                format!(
                    "this model's context is {} tokens, but a {longest}-token prompt plus the default max_tokens {DEFAULT_MAX_TOKENS} needs {}; give max_tokens up to {room}",
                    model.context,
                    longest + DEFAULT_MAX_TOKENS
                ),
            ));
        }
        Some(m) if (least..=room as i64).contains(&m) => m as usize,
        Some(0) => {
            return Err(ApiError::invalid(
                "max_tokens",
                "invalid_value",
                "max_tokens 0 generates nothing: it is allowed with echo: true (score the prompt), not without",
            ));
        }
        Some(m) if m >= least => {
            return Err(ApiError::invalid(
                "max_tokens",
                "context_length_exceeded",
                format!(
                    "max_tokens is {m}, but this model's context is {} tokens and the {longest}-token prompt leaves {room}",
                    model.context
                ),
            ));
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "max_tokens",
                "invalid_value",
                format!("max_tokens must be an integer from {least} to {room} (the context left after the prompt)"),
            ));
        }
    };
    let n = f.integer("n", 1, MAX_N as i64)?.unwrap_or(1) as usize;
    if let Some(best_of) = f.integer("best_of", 1, MAX_N as i64)?
        && best_of as usize != n
    {
        return Err(ApiError::invalid(
            "best_of",
            "unsupported_parameter",
            "best_of other than n is not supported; use n, or beam search in `inferlab generate --num-beams`",
        ));
    }
    let blocks: usize = prompts.iter().map(|p| (p.len() + max_tokens).div_ceil(model.block_size) * n).sum();
    if blocks > model.num_blocks {
        return Err(ApiError::invalid(
            "n",
            "kv_pool_exceeded",
            format!(
                "{} sequences of up to {} tokens need {blocks} KV blocks of {} tokens; the server's whole pool has {}",
                prompts.len() * n,
                longest + max_tokens,
                model.block_size,
                model.num_blocks
            ),
        ));
    }
    let temperature = f.number("temperature", 0.0, 2.0)?.unwrap_or(1.0);
    // Sampling runs in f32: a positive value that rounds to 0 there is as invalid as 0 (found by tests/fuzz.rs).
    let top_p = f.number("top_p", 0.0, 1.0)?.unwrap_or(1.0) as f32;
    if top_p == 0.0 {
        return Err(ApiError::invalid("top_p", "invalid_value", "top_p must be in (0, 1]"));
    }
    let top_k = f.integer("top_k", -1, i64::from(u32::MAX))?.unwrap_or(0).max(0) as usize;
    let repetition_penalty = f.number("repetition_penalty", 0.0, 10.0)?.unwrap_or(1.0) as f32;
    if repetition_penalty == 0.0 {
        return Err(ApiError::invalid("repetition_penalty", "invalid_value", "repetition_penalty must be in (0, 10]"));
    }
    let seed = match f.integer("seed", i64::MIN, i64::MAX)? {
        Some(s) => s as u64,
        None => fresh_seed(),
    };
    let logprobs = f.integer("logprobs", 0, MAX_LOGPROBS as i64)?.map(|k| k as usize);
    let presence_penalty = f.number("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32;
    let frequency_penalty = f.number("frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32;
    let logit_bias = logit_bias(fields.get("logit_bias"), model.vocab)?;
    let stream = f.boolean("stream")?.unwrap_or(false);
    let include_usage = match fields.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) if stream => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::invalid(
                    "stream_options.include_usage",
                    "invalid_type",
                    "stream_options.include_usage must be a boolean",
                ));
            }
        },
        Some(Value::Object(_)) => {
            return Err(ApiError::invalid(
                "stream_options",
                "invalid_value",
                "stream_options is only allowed with stream: true",
            ));
        }
        Some(_) => return Err(ApiError::invalid("stream_options", "invalid_type", "stream_options must be an object")),
    };
    f.string("user")?;
    Ok(Completion {
        prompts,
        max_tokens,
        sampling: SamplingParams {
            temperature: temperature as f32,
            top_k,
            top_p,
            repetition_penalty,
            seed,
            presence_penalty,
            frequency_penalty,
            logit_bias,
        },
        n,
        stop: stops(fields.get("stop"))?,
        stream,
        include_usage,
        logprobs,
        echo,
        return_token_ids: f.boolean("return_token_ids")?.unwrap_or(false),
        ignore_eos: f.boolean("ignore_eos")?.unwrap_or(false),
    })
}

/// OpenAI fields we do not implement: accepted only at their neutral values.
fn unsupported(f: &Fields) -> Checked<()> {
    match f.0.get("suffix") {
        None | Some(Value::Null) => Ok(()),
        Some(_) => {
            Err(ApiError::invalid("suffix", "unsupported_parameter", "suffix (insertion) is not supported by GPT-2"))
        }
    }
}

/// `logit_bias`: an object of token ids (as strings, OpenAI's shape) to biases from -100 to 100.
fn logit_bias(value: Option<&Value>, vocab: usize) -> Checked<Vec<(u32, f32)>> {
    let object = match value {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(ApiError::invalid(
                "logit_bias",
                "invalid_type",
                "logit_bias must be an object of token ids to biases",
            ));
        }
    };
    let mut biases = vec![];
    for (key, bias) in object {
        let id = key.parse::<u32>().ok().filter(|&id| (id as usize) < vocab).ok_or_else(|| {
            ApiError::invalid(
                "logit_bias",
                "invalid_value",
                format!("logit_bias key {key:?} is not a token id below {vocab}"),
            )
        })?;
        let bias = bias.as_f64().filter(|b| (-100.0..=100.0).contains(b)).ok_or_else(|| {
            ApiError::invalid(
                "logit_bias",
                "invalid_value",
                format!("logit_bias for token {key} must be a number from -100 to 100"),
            )
        })?;
        biases.push((id, bias as f32));
    }
    Ok(biases)
}

/// `prompt` as a string, a list of strings, a list of token ids or a list of such lists.
fn prompts(value: Option<&Value>, model: &ModelInfo, tokenizer: &Tokenizer) -> Checked<Vec<Vec<u32>>> {
    let bad = |msg: String| ApiError::invalid("prompt", "invalid_type", msg);
    let shape = "prompt must be a string, a list of strings, a list of token ids or a list of token-id lists";
    let prompts: Vec<Vec<u32>> = match value {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid("prompt", "missing_field", "you must provide a prompt"));
        }
        Some(Value::String(text)) => vec![encode(text, tokenizer)?],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::invalid("prompt", "invalid_value", "prompt is an empty list"));
        }
        Some(Value::Array(items)) => match &items[0] {
            Value::String(_) => items
                .iter()
                .map(|i| i.as_str().ok_or_else(|| bad(shape.into())).and_then(|t| encode(t, tokenizer)))
                .collect::<Checked<_>>()?,
            Value::Number(_) => vec![token_ids(items, model)?],
            Value::Array(_) => items
                .iter()
                .map(|i| i.as_array().ok_or_else(|| bad(shape.into())).and_then(|ids| token_ids(ids, model)))
                .collect::<Checked<_>>()?,
            _ => return Err(bad(shape.into())),
        },
        Some(_) => return Err(bad(shape.into())),
    };
    if prompts.len() > MAX_PROMPTS {
        return Err(ApiError::invalid(
            "prompt",
            "invalid_value",
            format!("at most {MAX_PROMPTS} prompts per request, got {}", prompts.len()),
        ));
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(ApiError::invalid("prompt", "invalid_value", format!("prompt {i} is empty")));
    }
    if let Some(long) = prompts.iter().find(|p| p.len() >= model.context) {
        return Err(ApiError::invalid(
            "prompt",
            "context_length_exceeded",
            format!(
                "a prompt of {} tokens leaves no room to generate in this model's context of {} tokens",
                long.len(),
                model.context
            ),
        ));
    }
    Ok(prompts)
}

fn encode(text: &str, tokenizer: &Tokenizer) -> Checked<Vec<u32>> {
    tokenizer.encode(text).map_err(|e| ApiError::invalid("prompt", "invalid_value", e.to_string()))
}

fn token_ids(items: &[Value], model: &ModelInfo) -> Checked<Vec<u32>> {
    items
        .iter()
        .map(|v| match v.as_u64() {
            Some(id) if (id as usize) < model.vocab => Ok(id as u32),
            _ => Err(ApiError::invalid(
                "prompt",
                "invalid_value",
                format!("token id {v} is not in the vocabulary (0..{})", model.vocab),
            )),
        })
        .collect()
}

/// `stop`: a string or up to four of them.
fn stops(value: Option<&Value>) -> Checked<Vec<String>> {
    let list = match value {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::invalid("stop", "invalid_type", "stop must be a string or a list of strings")
                })
            })
            .collect::<Checked<_>>()?,
        Some(_) => return Err(ApiError::invalid("stop", "invalid_type", "stop must be a string or a list of strings")),
    };
    if list.len() > MAX_STOP {
        return Err(ApiError::invalid(
            "stop",
            "invalid_value",
            format!("at most {MAX_STOP} stop strings, got {}", list.len()),
        ));
    }
    if list.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "invalid_value", "a stop string is empty"));
    }
    Ok(list)
}

/// A seed for a request that gave none: the clock's nanoseconds.
fn fresh_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Typed access to optional fields; `null` is absent.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> Checked<Option<String>> {
        self.get(name)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::invalid(name, "invalid_type", format!("{name} must be a string")))
            })
            .transpose()
    }

    fn boolean(&self, name: &str) -> Checked<Option<bool>> {
        self.get(name)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| ApiError::invalid(name, "invalid_type", format!("{name} must be true or false")))
            })
            .transpose()
    }

    /// An integer in `min..=max` (a float with no fraction counts, as in JSON Schema).
    fn integer(&self, name: &str, min: i64, max: i64) -> Checked<Option<i64>> {
        let Some(v) = self.get(name) else { return Ok(None) };
        let int = v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64));
        match int {
            Some(i) if (min..=max).contains(&i) => Ok(Some(i)),
            Some(i) => Err(ApiError::invalid(
                name,
                "invalid_value",
                format!("{name} must be between {min} and {max}, got {i}"),
            )),
            None if v.is_number() => Err(ApiError::invalid(
                name,
                "invalid_value",
                format!("{name} must be a whole number between {min} and {max}, got {v}"),
            )),
            None => Err(ApiError::invalid(name, "invalid_type", format!("{name} must be an integer"))),
        }
    }

    /// A number in `min..=max`.
    fn number(&self, name: &str, min: f64, max: f64) -> Checked<Option<f64>> {
        let Some(v) = self.get(name) else { return Ok(None) };
        match v.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(Some(x)),
            Some(x) => Err(ApiError::invalid(
                name,
                "invalid_value",
                format!("{name} must be between {min} and {max}, got {x}"),
            )),
            None => Err(ApiError::invalid(name, "invalid_type", format!("{name} must be a number"))),
        }
    }
}
