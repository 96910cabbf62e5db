//! The HTTP side: routes, the completions handler (plain JSON or Server-Sent Events), models,
//! health and metrics. Handlers check, submit and relay; they never touch a tensor, and the
//! only thing they hand the engine is a job with token ids.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router as Routes};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use super::api::{self, ApiError, Completion, ModelInfo};
use super::chat::{self, ChatTemplate};
use super::engine::{Event, Job, JobSeq};
use super::response::{Answer, ChoiceDelta, Failure, fold_finishes};
use super::router::Router;
use crate::engine::batching::sequence::Request;
use crate::engine::decode::sampling::SamplingParams;
use crate::engine::model::tokenizer::Tokenizer;

pub struct AppState {
    pub router: Arc<Router>,
    pub model: ModelInfo,
    pub tokenizer: Arc<Tokenizer>,
    /// `None`: chat requests get a 400 that says how to give one.
    pub chat_template: Option<ChatTemplate>,
    pub metrics: PrometheusHandle,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
}

pub fn routes(state: Arc<AppState>) -> Routes {
    let limit = state.max_body_bytes;
    Routes::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/tokenize", post(super::tokenize::tokenize))
        .route("/detokenize", post(super::tokenize::detokenize))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "not_found",
                "no such route; see /v1/completions, /v1/chat/completions, /v1/models, /tokenize, /detokenize, /health, /metrics",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        // A backstop behind the engine's own deadline (which answers 504 with a reason).
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            state.request_timeout + Duration::from_secs(10),
        ))
        // Request spans at INFERLAB_LOG=tower_http=debug; 5xx answers are counted in /metrics
        // and an engine failure is logged where it happens, so failures stay at debug here.
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG)))
        .with_state(state)
}

async fn completions(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let received = Instant::now();
    let answered = match read_body(&state, body) {
        Ok(body) => complete(&state, &body, received, false).await,
        Err(error) => Err(error),
    };
    counted(answered)
}

/// The chat API: the messages rendered by the chat template into a completion, answered in
/// chat shapes.
async fn chat_completions(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let received = Instant::now();
    let answered =
        match read_body(&state, body).and_then(|body| chat::to_completion(&body, state.chat_template.as_ref())) {
            Ok(body) => complete(&state, &body, received, true).await,
            Err(error) => Err(error),
        };
    counted(answered)
}

fn counted(answered: Result<Response, ApiError>) -> Response {
    let response = answered.unwrap_or_else(IntoResponse::into_response);
    counter!("inferlab_http_requests_total", "status" => response.status().as_u16().to_string()).increment(1);
    response
}

async fn complete(state: &AppState, body: &[u8], received: Instant, chat: bool) -> Result<Response, ApiError> {
    let request = api::parse(body, &state.model, &state.tokenizer)?;
    let (events, mut receiver) = mpsc::unbounded_channel();
    let (seqs, stops) = sequences(&request, &state.model);
    state.router.submit(Job { seqs, events, received, deadline: received + state.request_timeout })?;
    let mut answer = Answer::new(&request, state.model.name.clone(), stops, state.tokenizer.clone(), received, chat);
    if request.stream {
        return Ok(stream(answer, receiver, &request));
    }
    let mut deltas = answer.echo();
    while !answer.done() {
        let Some(event) = receiver.recv().await else { break };
        deltas.extend(answer.apply(event));
    }
    if let Some(error) = failure_error(&answer) {
        return Err(error);
    }
    Ok(Json(answer.body(deltas, request.return_token_ids)).into_response())
}

/// A request's body, or the error for one over the size limit or unreadable.
pub fn read_body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "body_too_large",
            format!("the body is over the {}-byte limit", state.max_body_bytes),
        ),
        status => ApiError::new(status, "invalid_request_error", "invalid_body", e.body_text()),
    })
}

/// One engine sequence per prompt × choice, each with its own seed and stop flag.
fn sequences(request: &Completion, model: &ModelInfo) -> (Vec<JobSeq>, Vec<Arc<AtomicBool>>) {
    let eos = if request.ignore_eos { vec![] } else { model.eos_token_ids.clone() };
    let mut seqs = vec![];
    let mut stops = vec![];
    for (p, prompt) in request.prompts.iter().enumerate() {
        for j in 0..request.n {
            let stop = Arc::new(AtomicBool::new(false));
            let sampling =
                SamplingParams { seed: request.sampling.seed.wrapping_add(j as u64), ..request.sampling.clone() };
            let engine_request = Request {
                prompt: prompt.clone(),
                max_new_tokens: request.max_tokens,
                sampling,
                eos_token_ids: eos.clone(),
                arrival_ms: 0.0,
                logprobs: request.logprobs,
            };
            let prompt_logprobs = request.logprobs.filter(|_| request.echo);
            seqs.push(JobSeq {
                choice: p * request.n + j,
                request: engine_request,
                stop: stop.clone(),
                prompt_logprobs,
            });
            stops.push(stop);
        }
    }
    (seqs, stops)
}

/// The error for an answer that ended without all its choices.
fn failure_error(answer: &Answer) -> Option<ApiError> {
    match answer.failure() {
        Some(Failure::TimedOut) => Some(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "request_timeout",
            "the request ran past the server's --request-timeout",
        )),
        Some(Failure::Engine(message)) => {
            Some(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "engine_error", message.clone()))
        }
        None if !answer.done() => Some(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "engine_stopped",
            "the engine stopped before the answer was complete",
        )),
        None => None,
    }
}

/// A streamed answer: a chunk per delta, an error event if it fails, the usage chunk when
/// asked, then `[DONE]`. Dropping it (the client left) drops the receiver, which the engine
/// sees as a cancellation.
fn stream(mut answer: Answer, events: UnboundedReceiver<Event>, request: &Completion) -> Response {
    let token_ids = request.return_token_ids;
    let pending: VecDeque<String> = answer.echo().iter().map(|d| answer.chunk(d, token_ids).to_string()).collect();
    let state = Streaming { answer, events, pending, finished: false, include_usage: request.include_usage, token_ids };
    let chunks = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(data) = s.pending.pop_front() {
                return Some((Ok::<_, Infallible>(SseEvent::default().data(data)), s));
            }
            if s.finished {
                return None;
            }
            if s.answer.done() || s.answer.failure().is_some() {
                s.end();
                continue;
            }
            match s.events.recv().await {
                Some(event) => {
                    // Everything the step sent at once, as few chunks as the choices need.
                    let mut deltas: Vec<ChoiceDelta> = s.answer.apply(event).into_iter().collect();
                    while let Ok(event) = s.events.try_recv() {
                        deltas.extend(s.answer.apply(event));
                    }
                    for delta in fold_finishes(deltas) {
                        s.pending.push_back(s.answer.chunk(&delta, s.token_ids).to_string());
                    }
                }
                None => s.end(),
            }
        }
    });
    Sse::new(chunks).into_response()
}

struct Streaming {
    answer: Answer,
    events: UnboundedReceiver<Event>,
    pending: VecDeque<String>,
    finished: bool,
    include_usage: bool,
    token_ids: bool,
}

impl Streaming {
    fn end(&mut self) {
        if let Some(error) = failure_error(&self.answer) {
            self.pending.push_back(error.body().to_string());
        } else if self.include_usage {
            let a = &self.answer;
            let usage = json!({"id": a.id, "object": a.chunk_object(), "created": a.created, "model": a.model, "choices": [], "usage": a.usage()});
            self.pending.push_back(usage.to_string());
        }
        self.pending.push_back("[DONE]".into());
        self.finished = true;
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [{
        "id": state.model.name,
        "object": "model",
        "created": 0,
        "owned_by": "inferlab",
        "max_model_len": state.model.context,
    }]}))
}

/// 200 once every replica has loaded and warmed up; 503 while loading or draining (so a
/// load balancer stops sending before the drain ends).
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let router = &state.router;
    if router.ready() {
        return (StatusCode::OK, Json(json!({"status": "ok"}))).into_response();
    }
    let status = if router.draining() { "draining" } else { "loading" };
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": status}))).into_response()
}

/// Prometheus text; the gauges are read from the replicas at scrape time.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let router = &state.router;
    let sum = |f: fn(&super::engine::Gauges) -> usize| router.gauges().map(f).sum::<usize>() as f64;
    gauge!("inferlab_queue_depth").set(router.queued.load(Ordering::SeqCst) as f64);
    gauge!("inferlab_running").set(sum(|g| g.running.load(Ordering::Relaxed)));
    gauge!("inferlab_waiting").set(sum(|g| g.waiting.load(Ordering::Relaxed)));
    gauge!("inferlab_kv_blocks_used").set(sum(|g| g.blocks_used.load(Ordering::Relaxed)));
    gauge!("inferlab_kv_blocks_free").set(sum(|g| g.blocks_free.load(Ordering::Relaxed)));
    gauge!("inferlab_replicas_ready").set(sum(|g| usize::from(g.ready.load(Ordering::Relaxed))));
    gauge!("inferlab_max_queue").set(router.max_queue as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
