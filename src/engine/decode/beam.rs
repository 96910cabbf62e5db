//! Beam search with Hugging Face `generate()` semantics, on the KV cache.
//!
//! Each step every running beam's next-token log-probs (float32 `log_softmax`, then
//! `no_repeat_ngram_size` bans) are added to its running score; the best `2·num_beams`
//! candidates are ranked. Those not ending the search become the next running beams (the best
//! `num_beams`); an EOS candidate ranked within the first `num_beams` becomes a finished
//! hypothesis scored `sum_logprobs / generated_len^length_penalty`, competing for
//! `num_beams` places. At `max_new_tokens` the top candidates all finish. `early_stopping`:
//! `true` stops once `num_beams` hypotheses are finished; `false` / `never` stop once the best
//! running beam cannot beat the worst finished one (at its current length / at the longest
//! possible length when the penalty rewards length).
//!
//! The beams are the rows of one batch. After each step the cache's rows are reordered to
//! the kept beams' parents: a fork of block tables with copy-on-write (paged cache: only a
//! row's last, partly filled block is ever copied) or a gather of whole rows (contiguous).

use std::fmt;
use std::ops::ControlFlow;
use std::str::FromStr;

use web_time::Instant;

use crate::engine::decode::generate::fit_context;
use crate::engine::decode::sampling::log_softmax;
use crate::engine::error::{EngineError, Result};
use crate::engine::kv::{KvCache, KvMode};
use crate::engine::model::gpt2::{Gpt2, Logits};
use crate::engine::readback;
use crate::engine::step::Step;

/// Beams beyond this are refused: each is a full row of the batch and of the KV cache.
pub const MAX_BEAMS: usize = 64;

/// transformers' `early_stopping`: `true`, `false` or `"never"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EarlyStopping {
    True,
    False,
    Never,
}

impl FromStr for EarlyStopping {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "true" => Ok(Self::True),
            "false" => Ok(Self::False),
            "never" => Ok(Self::Never),
            _ => Err(EngineError::Request(format!("early_stopping is true, false or never, got {s:?}"))),
        }
    }
}

impl fmt::Display for EarlyStopping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::True => "true",
            Self::False => "false",
            Self::Never => "never",
        })
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BeamOptions {
    pub num_beams: usize,
    pub num_return_sequences: usize,
    pub max_new_tokens: usize,
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    /// 0 = off.
    pub no_repeat_ngram_size: usize,
    pub eos_token_ids: Vec<u32>,
}

impl BeamOptions {
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(EngineError::Request(msg));
        if !(1..=MAX_BEAMS).contains(&self.num_beams) {
            return bad(format!("num_beams must be 1 to {MAX_BEAMS}, got {}", self.num_beams));
        }
        if !(1..=self.num_beams).contains(&self.num_return_sequences) {
            return bad(format!(
                "num_return_sequences must be 1 to num_beams ({}), got {}",
                self.num_beams, self.num_return_sequences
            ));
        }
        if !self.length_penalty.is_finite() {
            return bad(format!("length_penalty must be a finite number, got {}", self.length_penalty));
        }
        Ok(())
    }
}

/// A returned sequence: its new ids (the EOS included) and transformers' score.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hypothesis {
    pub ids: Vec<u32>,
    /// `sum_logprobs / len^length_penalty`.
    pub score: f32,
}

/// What happened to a candidate of one step.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Runs on as beam `slot` of the next step.
    Kept {
        slot: usize,
    },
    /// Became a finished hypothesis with this (length-penalised) score.
    Finished {
        score: f32,
    },
    Pruned,
}

/// One of the `2·num_beams` best continuations of a step, best first.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    /// The running beam (slot of the previous step's kept beams) it continues.
    pub parent: usize,
    pub token: u32,
    pub log_prob: f32,
    /// Running sum of log-probs.
    pub score: f32,
    pub fate: Fate,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BeamStep {
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, Clone)]
pub struct BeamResult {
    /// Best first, `num_return_sequences` of them.
    pub hypotheses: Vec<Hypothesis>,
    pub steps: Vec<BeamStep>,
    pub total_ms: f64,
    /// Most token slots of K/V held at once (shared paged blocks counted once).
    pub kv_peak_tokens: usize,
}

#[derive(Clone)]
struct Beam {
    tokens: Vec<u32>,
    score: f32,
}

/// Runs beam search from `prompt`; `on_step` sees every step, `Break` stops after it (the
/// running beams are then returned as they are).
pub async fn beam_search(
    model: &Gpt2,
    prompt: &[u32],
    options: &BeamOptions,
    kv: KvMode,
    mut on_step: impl FnMut(&BeamStep) -> ControlFlow<()>,
) -> Result<BeamResult> {
    options.validate()?;
    let config = &model.config;
    let (prompt, max_new, _) = fit_context(prompt, options.max_new_tokens, config.n_positions, false)?;
    let k = options.num_beams;
    let start = Instant::now();
    // Room for every beam's row; the prompt is computed once in row 0 and then shared.
    let mut cache = model.cache(kv, k, prompt.len() + max_new)?;
    cache.reorder(&[0], model.device())?;
    let mut step = Step::single(&prompt, 0);
    let mut running = vec![Beam { tokens: vec![], score: 0.0 }];
    let mut finished: Vec<Hypothesis> = vec![];
    let mut improvable = true;
    let mut out = BeamResult { hypotheses: vec![], steps: vec![], total_ms: 0.0, kv_peak_tokens: 0 };
    for generated in 0..max_new {
        let logits = model.forward(&step, &mut cache, Logits::Last)?;
        out.kv_peak_tokens = out.kv_peak_tokens.max(held_tokens(&cache, k, prompt.len() + max_new));
        let rows = readback::floats(logits).await?;
        let vocab = config.vocab_size;

        // The 2·k best (parent, token, score) over all running beams, best first.
        let mut candidates = vec![];
        for (parent, beam) in running.iter().enumerate() {
            let mut log_probs = log_softmax(&rows[parent * vocab..(parent + 1) * vocab]);
            let mut history = prompt.clone();
            history.extend_from_slice(&beam.tokens);
            for banned in banned_tokens(&history, options.no_repeat_ngram_size) {
                log_probs[banned as usize] = f32::NEG_INFINITY;
            }
            candidates.extend(
                top(&log_probs, 2 * k)
                    .into_iter()
                    .map(|token| (parent, token as u32, log_probs[token], beam.score + log_probs[token])),
            );
        }
        candidates.sort_by(|a, b| b.3.total_cmp(&a.3).then((a.0, a.1).cmp(&(b.0, b.1))));
        candidates.truncate(2 * k);

        let last = generated + 1 == max_new;
        let hits: Vec<bool> = candidates.iter().map(|c| last || options.eos_token_ids.contains(&c.1)).collect();
        let full = finished.len() == k && options.early_stopping == EarlyStopping::True;
        let penalty = (((generated + 1) as f64).powf(f64::from(options.length_penalty))) as f32;
        let mut next = vec![];
        let mut record = BeamStep { candidates: vec![] };
        for (rank, (&(parent, token, log_prob, score), &hit)) in candidates.iter().zip(&hits).enumerate() {
            let fate = if hit {
                if rank < k && !full && improvable {
                    let mut ids = running[parent].tokens.clone();
                    ids.push(token);
                    finished.push(Hypothesis { ids, score: score / penalty });
                    Fate::Finished { score: score / penalty }
                } else {
                    Fate::Pruned
                }
            } else if next.len() < k {
                let mut tokens = running[parent].tokens.clone();
                tokens.push(token);
                next.push((parent, Beam { tokens, score }));
                Fate::Kept { slot: next.len() - 1 }
            } else {
                Fate::Pruned
            };
            record.candidates.push(Candidate { parent, token, log_prob, score, fate });
        }
        // Best k finished, earlier ones first among equals (as a stable top-k merge).
        finished.sort_by(|a, b| b.score.total_cmp(&a.score));
        finished.truncate(k);
        let cancelled = on_step(&record).is_break();
        out.steps.push(record);

        if hits.iter().all(|&h| h) {
            break;
        }
        let length = if options.early_stopping == EarlyStopping::Never && options.length_penalty > 0.0 {
            max_new
        } else {
            generated + 1
        };
        let best_possible = next.first().map_or(f32::NEG_INFINITY, |(_, b)| b.score)
            / ((length as f64).powf(f64::from(options.length_penalty)) as f32);
        let worst_finished = if finished.len() == k {
            finished.iter().map(|h| h.score).fold(f32::INFINITY, f32::min)
        } else {
            f32::NEG_INFINITY
        };
        improvable &= best_possible > worst_finished;
        let all_finished = finished.len() == k && options.early_stopping == EarlyStopping::True;
        if !improvable || all_finished || cancelled || next.is_empty() {
            if cancelled {
                finished
                    .extend(next.iter().map(|(_, b)| Hypothesis { ids: b.tokens.clone(), score: b.score / penalty }));
                finished.sort_by(|a, b| b.score.total_cmp(&a.score));
            }
            break;
        }

        let parents: Vec<usize> = next.iter().map(|(p, _)| *p).collect();
        cache.reorder(&parents, model.device())?;
        running = next.into_iter().map(|(_, b)| b).collect();
        step = if cache.is_stateless() {
            let rows: Vec<Vec<u32>> = running.iter().map(|b| [prompt.as_slice(), &b.tokens].concat()).collect();
            Step::left_padded(&rows, 0)
        } else {
            let fed: Vec<u32> = running.iter().map(|b| *b.tokens.last().expect("a kept beam has a token")).collect();
            Step::decode(&fed, &vec![prompt.len() + generated; fed.len()])
        };
    }
    finished.truncate(options.num_return_sequences);
    out.hypotheses = finished;
    out.total_ms = start.elapsed().as_secs_f64() * 1000.0;
    Ok(out)
}

/// Token slots of K/V the cache holds: shared paged blocks once, a contiguous cache all of
/// its preallocated rows, none without a cache.
fn held_tokens(cache: &KvCache, rows: usize, capacity: usize) -> usize {
    match cache {
        KvCache::Paged(p) => p.row_slots_held().unwrap_or(0),
        KvCache::Contiguous(_) => rows * capacity,
        _ => 0,
    }
}

/// Indices of the `n` largest values, largest first (lower index first among equals).
fn top(values: &[f32], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    let n = n.min(order.len());
    order.select_nth_unstable_by(n.saturating_sub(1), |&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(n);
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order
}

/// Tokens that would repeat an n-gram already in `history` (transformers'
/// `NoRepeatNGramLogitsProcessor`); none when `n` is 0 or the history is too short.
fn banned_tokens(history: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || history.len() + 1 < n {
        return vec![];
    }
    let prefix = &history[history.len() + 1 - n..];
    history.windows(n).filter(|w| &w[..n - 1] == prefix).map(|w| w[n - 1]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngram_bans_follow_transformers() {
        // "a b c a b" with n = 3: the prefix "a b" was followed by "c".
        assert_eq!(banned_tokens(&[1, 2, 3, 1, 2], 3), vec![3]);
        assert_eq!(banned_tokens(&[1, 2], 3), Vec::<u32>::new());
        assert_eq!(banned_tokens(&[5, 5, 5], 1), vec![5, 5, 5]);
        assert!(banned_tokens(&[1, 2, 3], 0).is_empty());
        // A history exactly n long holds one n-gram: "5 5" then 5 would repeat it.
        assert_eq!(banned_tokens(&[5, 5], 2), vec![5]);
        assert_eq!(banned_tokens(&[4, 5], 2), Vec::<u32>::new());
    }

    /// `--early-stopping` takes transformers' three values and says so for anything else.
    #[test]
    fn early_stopping_reads_transformers_values() {
        for (text, value) in
            [("true", EarlyStopping::True), ("false", EarlyStopping::False), ("never", EarlyStopping::Never)]
        {
            assert_eq!(text.parse::<EarlyStopping>().unwrap(), value);
            assert_eq!(value.to_string(), text);
        }
        assert!("yes".parse::<EarlyStopping>().unwrap_err().to_string().contains("true, false or never"));
    }

    #[test]
    fn top_is_sorted_and_stable() {
        assert_eq!(top(&[0.1, 0.5, 0.5, -1.0, 0.9], 3), vec![4, 1, 2]);
    }

    #[test]
    fn bad_options_are_refused() {
        let ok = BeamOptions {
            num_beams: 4,
            num_return_sequences: 4,
            max_new_tokens: 8,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::True,
            no_repeat_ngram_size: 0,
            eos_token_ids: vec![],
        };
        assert!(ok.validate().is_ok());
        for bad in [
            BeamOptions { num_beams: 0, ..ok.clone() },
            BeamOptions { num_beams: MAX_BEAMS + 1, ..ok.clone() },
            BeamOptions { num_return_sequences: 5, ..ok.clone() },
            BeamOptions { length_penalty: f32::NAN, ..ok.clone() },
        ] {
            assert!(bad.validate().is_err());
        }
    }
}
