//! `/v1/chat/completions`: OpenAI's chat API over a completion model. GPT-2 has no chat
//! format of its own, so, as vLLM does, the messages are rendered into one prompt by a Jinja
//! chat template (`--chat-template FILE`, or the model's `tokenizer_config.json`
//! `chat_template`) with minijinja, the engine TGI and mistral.rs use; the prompt then runs as
//! a completion, and the answer is put back in the chat shape.

use std::path::Path;

use anyhow::{Context, Result};
use minijinja::{Environment, Error, ErrorKind, context};
use serde::Serialize;
use serde_json::{Map, Value};

use super::api::{ApiError, json_object};

/// Fields a chat request may carry that mean the same in a completion.
const SHARED_FIELDS: &[&str] = &[
    "model",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "ignore_eos",
    "user",
    "return_token_ids",
];

/// GPT-2's one special token, which templates know as both.
const ENDOFTEXT: &str = "<|endoftext|>";

/// A loaded chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

#[derive(Serialize)]
struct Message {
    role: String,
    content: String,
}

impl ChatTemplate {
    /// Compiles `source` now, so a broken template stops the server at start, not a request.
    pub fn new(source: String) -> Result<Self> {
        let mut env = Environment::new();
        env.add_function("raise_exception", |message: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned("chat", source).context("the chat template does not compile")?;
        Ok(Self { env })
    }

    /// `--chat-template FILE`, else the `chat_template` of `tokenizer_config.json` in `dir`.
    pub fn find(file: Option<&Path>, dir: Option<&Path>) -> Result<Option<Self>> {
        if let Some(file) = file {
            let source = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the chat template {}", file.display()))?;
            return Self::new(source).map(Some);
        }
        let Some(config) = dir.map(|d| d.join("tokenizer_config.json")).filter(|p| p.is_file()) else {
            return Ok(None);
        };
        let json: Value = serde_json::from_slice(&std::fs::read(&config)?)
            .with_context(|| format!("{} is not JSON", config.display()))?;
        match json.get("chat_template") {
            Some(Value::String(source)) => Self::new(source.clone()).map(Some),
            _ => Ok(None),
        }
    }

    fn render(&self, messages: &[Message]) -> Result<String, ApiError> {
        let template = self.env.get_template("chat").expect("compiled at start");
        template
            .render(context! { messages => messages, add_generation_prompt => true, bos_token => ENDOFTEXT, eos_token => ENDOFTEXT })
            .map_err(|e| ApiError::invalid("messages", "invalid_value", format!("the chat template refused these messages: {e}")))
    }
}

/// A chat request as the completion body it runs as: the messages rendered into `prompt`,
/// `max_completion_tokens` (or `max_tokens`) as `max_tokens`, the shared fields as they are.
pub fn to_completion(body: &[u8], template: Option<&ChatTemplate>) -> Result<Vec<u8>, ApiError> {
    let fields = json_object(body)?;
    let template = template.ok_or_else(|| {
        ApiError::invalid(
            "messages",
            "chat_template_missing",
            "this model has no chat template (GPT-2 was not trained on chats): start the server with --chat-template FILE, a Jinja template over `messages` as vLLM takes, or send a prompt to /v1/completions",
        )
    })?;
    let mut completion = Map::new();
    for (key, v) in &fields {
        match key.as_str() {
            "messages" => {}
            "max_tokens" | "max_completion_tokens" => {
                completion.insert("max_tokens".into(), v.clone());
            }
            "logprobs" | "top_logprobs" if v.is_null() || *v == Value::Bool(false) => {}
            "logprobs" | "top_logprobs" => {
                return Err(ApiError::invalid(
                    key,
                    "unsupported_parameter",
                    "logprobs are served by /v1/completions (with echo for the prompt's); chat answers carry none",
                ));
            }
            shared if SHARED_FIELDS.contains(&shared) => {
                completion.insert(key.clone(), v.clone());
            }
            unknown => {
                return Err(ApiError::invalid(
                    unknown,
                    "unknown_parameter",
                    format!("unrecognized request argument: {unknown}"),
                ));
            }
        }
    }
    let messages = messages(fields.get("messages"))?;
    completion.insert("prompt".into(), Value::String(template.render(&messages)?));
    Ok(Value::Object(completion).to_string().into_bytes())
}

/// `messages`: a non-empty list of `{role, content}`, content a string or a list of text parts.
fn messages(value: Option<&Value>) -> Result<Vec<Message>, ApiError> {
    let bad = |message: &str| ApiError::invalid("messages", "invalid_type", message.to_string());
    let list = match value {
        Some(Value::Array(list)) if !list.is_empty() => list,
        None | Some(Value::Null) => {
            return Err(ApiError::invalid("messages", "missing_field", "you must provide messages"));
        }
        _ => return Err(bad("messages must be a non-empty list of {role, content}")),
    };
    list.iter()
        .map(|m| {
            let role =
                m.get("role").and_then(Value::as_str).ok_or_else(|| bad("each message needs a role (a string)"))?;
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => String::new(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(text)) => Ok(text),
                        _ => Err(bad("only text parts ({\"type\": \"text\", \"text\": …}) are supported")),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .concat(),
                Some(_) => return Err(bad("a message's content must be a string or a list of text parts")),
            };
            Ok(Message { role: role.to_string(), content })
        })
        .collect()
}
