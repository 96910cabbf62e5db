//! Workloads: requests read from a JSONL file (one object a line), or made up from a seeded
//! recipe — arrivals (Poisson, or bursts) and prompt / output lengths (uniform or long-tail).

use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use super::sequence::Request;
use crate::engine::decode::sampling::SamplingParams;
use crate::engine::error::{EngineError, Result};

/// One line of a requests file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    prompt: Option<String>,
    prompt_ids: Option<Vec<u32>>,
    /// A trace's prompt length only: that many seeded random ids.
    prompt_tokens: Option<usize>,
    max_new_tokens: usize,
    #[serde(default)]
    arrival_ms: f64,
    #[serde(default)]
    temperature: f32,
    #[serde(default)]
    top_k: usize,
    #[serde(default = "one")]
    top_p: f32,
    #[serde(default = "one")]
    repetition_penalty: f32,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    presence_penalty: f32,
    #[serde(default)]
    frequency_penalty: f32,
    /// OpenAI's shape: token ids (as strings) to biases.
    #[serde(default)]
    logit_bias: std::collections::BTreeMap<String, f32>,
    #[serde(default)]
    ignore_eos: bool,
}

fn one() -> f32 {
    1.0
}

/// Ids that `prompt_tokens` draws from: the GPT-2 vocabulary without its end-of-text token.
const RANDOM_IDS: u32 = 50256;

/// Reads a JSONL requests file: `prompt` (text, tokenized by `tokenize`), `prompt_ids` or
/// `prompt_tokens` (a trace's length only: seeded random ids), `max_new_tokens`, optional `arrival_ms` and sampling fields as `generate`. A line that
/// cannot be read, or asks for more than the model's context of `max_context` tokens, is an
/// error naming the line and the field.
pub fn parse_jsonl(
    text: &str,
    eos_token_ids: &[u32],
    max_context: usize,
    tokenize: impl Fn(&str) -> Result<Vec<u32>>,
) -> Result<Vec<Request>> {
    let mut requests = vec![];
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = |msg: String| EngineError::Request(format!("requests line {}: {msg}", n + 1));
        let line: Line = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
        let prompt = match (line.prompt, line.prompt_ids, line.prompt_tokens) {
            (Some(text), None, None) => tokenize(&text).map_err(|e| at(format!("prompt: {e}")))?,
            (None, Some(ids), None) => ids,
            (None, None, Some(len)) => {
                let mut rng = StdRng::seed_from_u64(n as u64);
                (0..len).map(|_| rng.random_range(0..RANDOM_IDS)).collect()
            }
            (None, None, None) => return Err(at("missing field `prompt` (or `prompt_ids`, `prompt_tokens`)".into())),
            _ => return Err(at("give one of `prompt`, `prompt_ids` and `prompt_tokens`".into())),
        };
        if prompt.is_empty() || prompt.len() >= max_context {
            return Err(at(format!(
                "prompt: {} tokens; it needs 1 to {} (the model's context is {max_context})",
                prompt.len(),
                max_context - 1
            )));
        }
        if line.max_new_tokens == 0 || prompt.len() + line.max_new_tokens > max_context {
            return Err(at(format!(
                "max_new_tokens: {} new tokens after a {}-token prompt; it needs 1 to {} (the model's context is {max_context})",
                line.max_new_tokens,
                prompt.len(),
                max_context - prompt.len()
            )));
        }
        if !(line.arrival_ms.is_finite() && line.arrival_ms >= 0.0) {
            return Err(at(format!("arrival_ms must be a finite number >= 0, got {}", line.arrival_ms)));
        }
        let sampling = SamplingParams {
            temperature: line.temperature,
            top_k: line.top_k,
            top_p: line.top_p,
            repetition_penalty: line.repetition_penalty,
            seed: line.seed,
            presence_penalty: line.presence_penalty,
            frequency_penalty: line.frequency_penalty,
            logit_bias: line
                .logit_bias
                .iter()
                .map(|(id, &bias)| id.parse::<u32>().map(|id| (id, bias)))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| at("logit_bias keys must be token ids".to_string()))?,
        };
        sampling.validate().map_err(|e| at(e.to_string()))?;
        requests.push(Request {
            prompt,
            max_new_tokens: line.max_new_tokens,
            sampling,
            eos_token_ids: if line.ignore_eos { vec![] } else { eos_token_ids.to_vec() },
            arrival_ms: line.arrival_ms,
            logprobs: None,
        });
    }
    if requests.is_empty() {
        return Err(EngineError::Request("the requests file holds no request".into()));
    }
    Ok(requests)
}

/// When requests arrive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arrivals {
    /// Independent arrivals, `rate` per second on average.
    Poisson { rate: f64 },
    /// Groups of `burst` requests at once, the groups Poisson at `rate / burst` per second.
    Bursty { rate: f64, burst: usize },
}

/// A token-count distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Lengths {
    Uniform {
        min: usize,
        max: usize,
    },
    /// Mostly short, a few long: Pareto (shape 1.2) from `min`, cut at `max`.
    LongTail {
        min: usize,
        max: usize,
    },
}

impl Lengths {
    fn sample(self, rng: &mut StdRng) -> usize {
        match self {
            Self::Uniform { min, max } => rng.random_range(min..=max.max(min)),
            Self::LongTail { min, max } => {
                let u: f64 = rng.random_range(0.0..1.0);
                ((min.max(1) as f64 / (1.0 - u).powf(1.0 / 1.2)) as usize).clamp(min, max.max(min))
            }
        }
    }

    fn max(self) -> usize {
        match self {
            Self::Uniform { max, .. } | Self::LongTail { max, .. } => max,
        }
    }
}

/// A made-up workload: greedy requests of random token ids (seeded), never stopped by EOS.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub requests: usize,
    pub arrivals: Arrivals,
    pub prompt: Lengths,
    pub output: Lengths,
    pub seed: u64,
}

impl WorkloadSpec {
    pub fn validate(&self, max_context: usize) -> Result<()> {
        let bad = |msg: String| Err(EngineError::Request(msg));
        let rate = match self.arrivals {
            Arrivals::Poisson { rate } | Arrivals::Bursty { rate, .. } => rate,
        };
        if !(rate.is_finite() && rate > 0.0) {
            return bad(format!("the arrival rate must be a positive number of requests per second, got {rate}"));
        }
        if matches!(self.arrivals, Arrivals::Bursty { burst: 0, .. }) {
            return bad("a burst holds at least 1 request".into());
        }
        for (name, l) in [("prompt", self.prompt), ("output", self.output)] {
            let (Lengths::Uniform { min, max } | Lengths::LongTail { min, max }) = l;
            if min == 0 || min > max {
                return bad(format!("{name} lengths need 1 <= min <= max, got {min}..{max}"));
            }
        }
        if self.prompt.max() + self.output.max() > max_context {
            return bad(format!(
                "prompts up to {} plus outputs up to {} tokens exceed the model's context of {max_context}",
                self.prompt.max(),
                self.output.max()
            ));
        }
        if self.requests == 0 {
            return bad("a workload needs at least 1 request".into());
        }
        Ok(())
    }

    /// The requests, sorted by arrival.
    pub fn generate(&self, vocab_size: usize) -> Vec<Request> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut clock = 0.0;
        let mut out = Vec::with_capacity(self.requests);
        let (rate, burst) = match self.arrivals {
            Arrivals::Poisson { rate } => (rate, 1),
            Arrivals::Bursty { rate, burst } => (rate / burst as f64, burst),
        };
        while out.len() < self.requests {
            let u: f64 = rng.random_range(0.0..1.0);
            clock += -(1.0 - u).ln() / rate * 1000.0;
            for _ in 0..burst.min(self.requests - out.len()) {
                let prompt_len = self.prompt.sample(&mut rng);
                out.push(Request {
                    prompt: (0..prompt_len).map(|_| rng.random_range(0..vocab_size as u32)).collect(),
                    max_new_tokens: self.output.sample(&mut rng),
                    sampling: SamplingParams::default(),
                    eos_token_ids: vec![],
                    arrival_ms: clock,
                    logprobs: None,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_name_the_line_and_the_field() {
        let tokenize = |_: &str| Ok(vec![1, 2]);
        let err = |text: &str| parse_jsonl(text, &[], 16, tokenize).unwrap_err().to_string();
        assert!(err("{\"prompt\": \"a\", \"max_new_tokens\": 2}\n{oops").contains("line 2"));
        assert!(err("{\"prompt\": \"a\"}").contains("max_new_tokens"));
        assert!(err("{\"max_new_tokens\": 2}").contains("prompt"));
        assert!(err("{\"prompt_ids\": [1], \"max_new_tokens\": 2, \"temperature\": -1}").contains("temperature"));
        assert!(err("{\"prompt_ids\": [1], \"max_new_tokens\": 16}").contains("max_new_tokens"));
        assert!(err("{\"prompt_ids\": [], \"max_new_tokens\": 1}").contains("prompt"));
        assert!(err("{\"prompt\": \"a\", \"prompt_tokens\": 3, \"max_new_tokens\": 2}").contains("one of"));
        let trace = parse_jsonl("{\"prompt_tokens\": 5, \"max_new_tokens\": 2}", &[], 16, tokenize).unwrap();
        assert_eq!(trace[0].prompt.len(), 5);
        let ok = parse_jsonl("{\"prompt\": \"a\", \"max_new_tokens\": 2, \"arrival_ms\": 5}\n\n", &[7], 16, tokenize)
            .unwrap();
        assert_eq!(ok[0].prompt, vec![1, 2]);
        assert_eq!(ok[0].eos_token_ids, vec![7]);
    }

    #[test]
    fn made_up_workloads_are_seeded_and_bounded() {
        let spec = WorkloadSpec {
            requests: 50,
            arrivals: Arrivals::Bursty { rate: 20.0, burst: 5 },
            prompt: Lengths::LongTail { min: 4, max: 64 },
            output: Lengths::Uniform { min: 2, max: 9 },
            seed: 3,
        };
        let a = spec.generate(100);
        assert_eq!(a, spec.generate(100));
        assert_eq!(a.len(), 50);
        assert!(a.iter().all(|r| (4..=64).contains(&r.prompt.len()) && (2..=9).contains(&r.max_new_tokens)));
        assert!(a.windows(2).all(|w| w[0].arrival_ms <= w[1].arrival_ms));
        assert_eq!(a[0].arrival_ms, a[4].arrival_ms, "a burst arrives at once");
    }
}
