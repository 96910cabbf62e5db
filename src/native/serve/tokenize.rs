//! vLLM's `/tokenize` and `/detokenize`: the served model's tokenizer over HTTP, so a client
//! counts and reads tokens exactly as the server will (prompt lengths, `logit_bias` ids).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::ApiError;
use super::http::{AppState, read_body};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeRequest {
    model: Option<String>,
    prompt: String,
    /// GPT-2's tokenizer adds none: accepted for vLLM's clients, no effect.
    #[serde(default, rename = "add_special_tokens")]
    _add_special_tokens: Option<bool>,
    #[serde(default)]
    return_token_strs: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetokenizeRequest {
    model: Option<String>,
    tokens: Vec<u32>,
}

/// `{"prompt"}` → `{"count", "max_model_len", "tokens", "token_strs"}`.
pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request: TokenizeRequest = read(&state, body)?;
    check_model(&state, request.model.as_deref())?;
    let tokens = state
        .tokenizer
        .encode(&request.prompt)
        .map_err(|e| ApiError::invalid("prompt", "invalid_value", e.to_string()))?;
    let token_strs = request
        .return_token_strs
        .then(|| tokens.iter().map(|&id| state.tokenizer.decode(&[id]).unwrap_or_default()).collect::<Vec<_>>());
    Ok(Json(
        json!({"count": tokens.len(), "max_model_len": state.model.context, "tokens": tokens, "token_strs": token_strs}),
    ))
}

/// `{"tokens"}` → `{"prompt"}`.
pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request: DetokenizeRequest = read(&state, body)?;
    check_model(&state, request.model.as_deref())?;
    if let Some(id) = request.tokens.iter().find(|&&id| id as usize >= state.model.vocab) {
        return Err(ApiError::invalid(
            "tokens",
            "invalid_value",
            format!("token {id} is outside the vocabulary ({})", state.model.vocab),
        ));
    }
    let prompt = state
        .tokenizer
        .decode(&request.tokens)
        .map_err(|e| ApiError::invalid("tokens", "invalid_value", e.to_string()))?;
    Ok(Json(json!({ "prompt": prompt })))
}

fn read<T: serde::de::DeserializeOwned>(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = read_body(state, body)?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            format!("the body does not fit: {e}"),
        )
    })
}

/// A `model` given must be the served one (vLLM allows leaving it out).
fn check_model(state: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(name) if name != state.model.name => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            ..ApiError::invalid(
                "model",
                "model_not_found",
                format!("the model {name:?} does not exist; this server serves {:?}", state.model.name),
            )
        }),
        _ => Ok(()),
    }
}
