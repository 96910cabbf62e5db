//! Engine events → OpenAI completion choices. Streaming and non-streaming answers are built
//! by the same code: each token becomes a `ChoiceDelta` (the text it released, its id, its
//! log-probabilities); a stream sends each delta as a chunk, a plain answer concatenates them
//! — so the streamed chunks always join to the non-streamed text.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use metrics::{counter, histogram};
use serde_json::{Map, Value, json};

use super::api::Completion;
use super::engine::{Event, Outcome};
use crate::engine::batching::sequence::Finish;
use crate::engine::decode::sampling::TokenLogprobs;
use crate::engine::decode::text_stream::TextStream;
use crate::engine::model::tokenizer::Tokenizer;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// What one event added to one choice.
#[derive(Debug, Default)]
pub struct ChoiceDelta {
    pub index: usize,
    pub text: String,
    pub token_ids: Vec<u32>,
    pub logprobs: Option<Logprobs>,
    pub finish_reason: Option<&'static str>,
}

/// OpenAI's legacy completions `logprobs` object, column by column.
#[derive(Debug, Default, Clone)]
pub struct Logprobs {
    pub tokens: Vec<String>,
    /// `None` for a prompt's first token: nothing predicts it.
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<Map<String, Value>>>,
    pub text_offset: Vec<usize>,
}

impl Logprobs {
    fn extend(&mut self, other: Logprobs) {
        self.tokens.extend(other.tokens);
        self.token_logprobs.extend(other.token_logprobs);
        self.top_logprobs.extend(other.top_logprobs);
        self.text_offset.extend(other.text_offset);
    }

    fn json(&self) -> Value {
        json!({"tokens": self.tokens, "token_logprobs": self.token_logprobs, "top_logprobs": self.top_logprobs, "text_offset": self.text_offset})
    }
}

struct Choice {
    text: TextStream,
    /// Characters of this choice's text so far (for `text_offset`).
    chars: usize,
    generated: usize,
    finish: Option<&'static str>,
    stop: Arc<AtomicBool>,
    last_token: Option<Instant>,
}

/// Why a request ended before all its choices did.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    TimedOut,
    Engine(String),
}

/// One request's answer as it is being built.
pub struct Answer {
    pub id: String,
    pub created: u64,
    pub model: String,
    choices: Vec<Choice>,
    prompt_tokens: usize,
    /// The request's prompts if it asks for `echo` (choice `i` echoes prompt `i / n`), else none.
    echoed_prompts: Vec<Vec<u32>>,
    n: usize,
    logprobs: Option<usize>,
    tokenizer: Arc<Tokenizer>,
    received: Instant,
    first_token: Option<Instant>,
    failure: Option<Failure>,
    /// Answers `/v1/chat/completions`: chat shapes, and each stream's first delta says the role.
    chat: bool,
    role_sent: Vec<bool>,
}

impl Answer {
    /// `stops[i]` is choice i's stop flag (read by the engine).
    pub fn new(
        request: &Completion,
        model: String,
        stops: Vec<Arc<AtomicBool>>,
        tokenizer: Arc<Tokenizer>,
        received: Instant,
        chat: bool,
    ) -> Self {
        let choices: Vec<Choice> = stops
            .into_iter()
            .map(|stop| Choice {
                text: TextStream::new(request.stop.clone()),
                chars: 0,
                generated: 0,
                finish: None,
                stop,
                last_token: None,
            })
            .collect();
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let prefix = if chat { "chatcmpl" } else { "cmpl" };
        Self {
            role_sent: vec![false; choices.len()],
            chat,
            id: format!("{prefix}-{created:x}-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
            created,
            model,
            choices,
            prompt_tokens: request.prompts.iter().map(Vec::len).sum(),
            echoed_prompts: if request.echo { request.prompts.clone() } else { vec![] },
            n: request.n,
            logprobs: request.logprobs,
            tokenizer,
            received,
            first_token: None,
            failure: None,
        }
    }

    /// The echoed prompt of every choice (its first delta, before any token), when `echo` is
    /// asked without `logprobs`; with them it comes with the prompt's scores
    /// ([`Event::PromptLogprobs`]).
    pub fn echo(&mut self) -> Vec<ChoiceDelta> {
        if self.echoed_prompts.is_empty() || self.logprobs.is_some() {
            return vec![];
        }
        (0..self.choices.len()).map(|index| self.echoed(index, None)).collect()
    }

    /// Choice `index`'s prompt as its first delta, with its tokens' scores if given.
    fn echoed(&mut self, index: usize, scores: Option<Vec<Option<TokenLogprobs>>>) -> ChoiceDelta {
        let prompt = &self.echoed_prompts[index / self.n];
        let text = self.tokenizer.decode(prompt).unwrap_or_default();
        let logprobs = scores.map(|scores| {
            let mut all = Logprobs::default();
            let mut offset = 0;
            for (&token, score) in prompt.iter().zip(&scores) {
                let one = token_logprobs(token, score.as_ref(), offset, &self.tokenizer);
                offset += one.tokens[0].chars().count();
                all.extend(one);
            }
            all
        });
        self.choices[index].chars += text.chars().count();
        ChoiceDelta { index, text, logprobs, ..ChoiceDelta::default() }
    }

    pub fn done(&self) -> bool {
        self.failure.is_some() || self.choices.iter().all(|c| c.finish.is_some())
    }

    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Applies one engine event; returns what it added to a choice, if anything.
    pub fn apply(&mut self, event: Event) -> Option<ChoiceDelta> {
        let now = Instant::now();
        match event {
            Event::PromptLogprobs { choice, logprobs } => {
                let echoed = !self.echoed_prompts.is_empty() && choice < self.choices.len();
                echoed.then(|| self.echoed(choice, Some(logprobs)))
            }
            Event::Token { choice: index, token, logprobs } => {
                let choice = self.choices.get_mut(index)?;
                if choice.finish.is_some() {
                    return None; // a token computed while its stop string was being noticed
                }
                histogram!(if choice.last_token.is_some() { "inferlab_itl_seconds" } else { "inferlab_ttft_seconds" })
                    .record(now.duration_since(choice.last_token.unwrap_or(self.received)).as_secs_f64());
                choice.last_token = Some(now);
                self.first_token.get_or_insert(now);
                choice.generated += 1;
                let delta = choice.text.push(token, &self.tokenizer).unwrap_or_default();
                let logprobs = self
                    .logprobs
                    .zip(logprobs)
                    .map(|(_, lp)| token_logprobs(token, Some(&lp), choice.chars, &self.tokenizer));
                choice.chars += delta.text.chars().count();
                if delta.stopped {
                    choice.finish = Some("stop");
                    choice.stop.store(true, Ordering::Relaxed);
                }
                Some(ChoiceDelta {
                    index,
                    text: delta.text,
                    token_ids: vec![token],
                    logprobs,
                    finish_reason: choice.finish,
                })
            }
            Event::Done { choice: index, outcome } => {
                let choice = self.choices.get_mut(index)?;
                if choice.finish.is_some() {
                    return None;
                }
                match outcome {
                    Outcome::Finished(finish) => {
                        let reason = if finish == Finish::MaxNewTokens { "length" } else { "stop" };
                        choice.finish = Some(reason);
                        let text = choice.text.finish();
                        choice.chars += text.chars().count();
                        Some(ChoiceDelta { index, text, finish_reason: Some(reason), ..ChoiceDelta::default() })
                    }
                    Outcome::TimedOut => {
                        self.failure = Some(Failure::TimedOut);
                        None
                    }
                    Outcome::Failed(message) => {
                        self.failure = Some(Failure::Engine(message));
                        None
                    }
                }
            }
        }
    }

    pub fn usage(&self) -> Value {
        let completion: usize = self.choices.iter().map(|c| c.generated).sum();
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": completion, "total_tokens": self.prompt_tokens + completion})
    }

    /// What `object` says of this answer's chunks.
    pub fn chunk_object(&self) -> &'static str {
        if self.chat { "chat.completion.chunk" } else { "text_completion" }
    }

    /// One streamed chunk.
    pub fn chunk(&mut self, delta: &ChoiceDelta, token_ids: bool) -> Value {
        let choice = if self.chat {
            let first = !std::mem::replace(&mut self.role_sent[delta.index], true);
            let mut content = json!({ "content": delta.text });
            if first {
                content["role"] = json!("assistant");
            }
            json!({"index": delta.index, "delta": content, "logprobs": null, "finish_reason": delta.finish_reason})
        } else {
            choice_json(delta, token_ids)
        };
        json!({"id": self.id, "object": self.chunk_object(), "created": self.created, "model": self.model, "choices": [choice]})
    }

    /// The whole answer from every delta, in order.
    pub fn body(&self, deltas: Vec<ChoiceDelta>, token_ids: bool) -> Value {
        let mut merged: Vec<ChoiceDelta> =
            (0..self.choices.len()).map(|index| ChoiceDelta { index, ..ChoiceDelta::default() }).collect();
        for d in deltas {
            let m = &mut merged[d.index];
            m.text.push_str(&d.text);
            m.token_ids.extend(d.token_ids);
            if let Some(lp) = d.logprobs {
                m.logprobs.get_or_insert_with(Logprobs::default).extend(lp);
            }
            m.finish_reason = d.finish_reason.or(m.finish_reason);
        }
        if self.logprobs.is_some() {
            for m in &mut merged {
                m.logprobs.get_or_insert_with(Logprobs::default);
            }
        }
        if self.chat {
            let choices: Vec<Value> = merged
                .iter()
                .map(|d| json!({"index": d.index, "message": {"role": "assistant", "content": d.text}, "logprobs": null, "finish_reason": d.finish_reason}))
                .collect();
            return json!({"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model, "choices": choices, "usage": self.usage()});
        }
        let choices: Vec<Value> = merged.iter().map(|d| choice_json(d, token_ids)).collect();
        json!({"id": self.id, "object": "text_completion", "created": self.created, "model": self.model, "choices": choices, "usage": self.usage()})
    }
}

impl Drop for Answer {
    /// Counts how the request ended; also when its client left and the answer was dropped.
    fn drop(&mut self) {
        let outcome = match &self.failure {
            Some(Failure::TimedOut) => "timeout",
            Some(Failure::Engine(_)) => "failed",
            None if self.done() => "completed",
            None => "cancelled",
        };
        counter!("inferlab_request_outcomes_total", "outcome" => outcome).increment(1);
        if outcome == "completed" {
            histogram!("inferlab_e2e_latency_seconds").record(self.received.elapsed().as_secs_f64());
            counter!("inferlab_prompt_tokens_total").increment(self.prompt_tokens as u64);
        }
    }
}

/// Folds a choice's finishing delta (no token, a finish reason) into that choice's token delta
/// just before it, so a stream's last token chunk carries the finish reason, as OpenAI's does.
pub fn fold_finishes(deltas: Vec<ChoiceDelta>) -> Vec<ChoiceDelta> {
    let mut out: Vec<ChoiceDelta> = Vec::with_capacity(deltas.len());
    for d in deltas {
        let same = out.iter_mut().rev().find(|o| o.index == d.index);
        match same {
            Some(prev) if d.token_ids.is_empty() && prev.finish_reason.is_none() => {
                prev.text.push_str(&d.text);
                prev.finish_reason = d.finish_reason;
            }
            _ => out.push(d),
        }
    }
    out
}

fn choice_json(delta: &ChoiceDelta, token_ids: bool) -> Value {
    let mut choice = json!({
        "index": delta.index,
        "text": delta.text,
        "logprobs": delta.logprobs.as_ref().map(Logprobs::json),
        "finish_reason": delta.finish_reason,
    });
    if token_ids {
        choice["token_ids"] = json!(delta.token_ids);
    }
    choice
}

/// One token's column of `logprobs`; a prompt's first token has no score (`null`).
fn token_logprobs(token: u32, lp: Option<&TokenLogprobs>, offset: usize, tokenizer: &Tokenizer) -> Logprobs {
    let piece = |id: u32| tokenizer.decode(&[id]).unwrap_or_default();
    let top = lp.map(|lp| lp.top.iter().map(|&(id, l)| (piece(id), json!(l))).collect::<Map<String, Value>>());
    Logprobs {
        tokens: vec![piece(token)],
        token_logprobs: vec![lp.map(|lp| lp.logprob)],
        top_logprobs: vec![top],
        text_offset: vec![offset],
    }
}
