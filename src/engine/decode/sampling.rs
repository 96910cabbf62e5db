//! Choosing the next token from logits, in transformers' order: repetition penalty,
//! temperature, top-k, top-p, then a draw from a seeded RNG (same seed, same text).
//! Temperature 0 means greedy (argmax; ties go to the lowest id, as `torch.argmax`).
//! OpenAI's `logit_bias` comes first and its presence / frequency penalties right after the
//! repetition penalty, in vLLM's order.

use rand::{RngExt, SeedableRng, rngs::StdRng};

use crate::engine::error::{EngineError, Result};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = no top-k filter.
    pub top_k: usize,
    /// 1 = no nucleus filter.
    pub top_p: f32,
    /// 1 = off; > 1 discourages tokens already in the sequence (CTRL / HF semantics).
    pub repetition_penalty: f32,
    pub seed: u64,
    /// OpenAI's, -2 to 2: subtracted once from the logit of every token generated so far.
    #[serde(default)]
    pub presence_penalty: f32,
    /// OpenAI's, -2 to 2: subtracted from a token's logit once per time it was generated.
    #[serde(default)]
    pub frequency_penalty: f32,
    /// OpenAI's `logit_bias`: (token id, -100 to 100) added to the logit before anything else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: vec![],
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(EngineError::Request(msg));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("temperature must be a finite number >= 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!("repetition_penalty must be a finite number > 0, got {}", self.repetition_penalty));
        }
        for (name, value) in
            [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)]
        {
            if !(-2.0..=2.0).contains(&value) {
                return bad(format!("{name} must be from -2 to 2 (OpenAI's range), got {value}"));
            }
        }
        if let Some((id, bias)) = self.logit_bias.iter().find(|(_, b)| !(-100.0..=100.0).contains(b)) {
            return bad(format!("logit_bias for token {id} must be from -100 to 100, got {bias}"));
        }
        Ok(())
    }

    /// Refuses a `logit_bias` for a token outside a vocabulary of `vocab` tokens.
    pub fn check_vocab(&self, vocab: usize) -> Result<()> {
        match self.logit_bias.iter().find(|(id, _)| *id as usize >= vocab) {
            Some((id, _)) => {
                Err(EngineError::Request(format!("logit_bias names token {id}, outside the vocabulary ({vocab})")))
            }
            None => Ok(()),
        }
    }

    /// Whether OpenAI's presence or frequency penalty is on: they depend on what a sampler
    /// generated, which only [`Sampler`] knows.
    pub fn penalizes_generated(&self) -> bool {
        self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Whether the choice needs the full logits on the host (greedy without a penalty can
    /// take the argmax on the device and read back one integer).
    pub fn needs_logits(&self) -> bool {
        !self.is_greedy() || self.repetition_penalty != 1.0 || self.penalizes_generated() || !self.logit_bias.is_empty()
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// How often each token was picked so far: OpenAI's penalties count generated tokens only.
    generated: std::collections::HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        Ok(Self { params, rng, generated: Default::default() })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from one row of logits; `history` is the sequence so far
    /// (prompt included, as HF's repetition penalty sees it). The token is a draw from
    /// [`SamplingParams::distribution`] (greedy: its one token).
    pub fn pick(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let probs = self.distribution(logits, history);
        let token = if self.params.is_greedy() {
            probs.iter().position(|&q| q > 0.0).unwrap_or(0) as u32
        } else {
            self.draw(&probs)
        };
        *self.generated.entry(token).or_default() += 1;
        token
    }

    /// [`SamplingParams::distribution`] with OpenAI's presence and frequency penalties over
    /// the tokens this sampler picked so far: `logit[j] -= count[j] · frequency + (count[j] > 0)
    /// · presence`, after the repetition penalty and before the temperature.
    pub fn distribution(&self, logits: &mut [f32], history: &[u32]) -> Vec<f64> {
        self.params.penalize(logits, history);
        for (&id, &count) in &self.generated {
            if let Some(l) = logits.get_mut(id as usize) {
                *l -= count as f32 * self.params.frequency_penalty + self.params.presence_penalty;
            }
        }
        self.params.probabilities(logits)
    }

    /// Draws a token from a distribution (it need not sum to 1: a residual is fine).
    pub fn draw(&mut self, probs: &[f64]) -> u32 {
        pick(probs, self.rng.random::<f64>())
    }

    /// A uniform draw in [0, 1) from the same seeded stream (speculative acceptance tests).
    pub fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }
}

/// The token at fraction `u` (0 to 1) of the distribution's cumulative mass; a token of
/// probability 0 is never picked, even where rounding leaves a sliver of mass past the end.
fn pick(probs: &[f64], u: f64) -> u32 {
    let mut target = u * probs.iter().sum::<f64>();
    for (id, &q) in probs.iter().enumerate() {
        if q > 0.0 {
            if target < q {
                return id as u32;
            }
            target -= q;
        }
    }
    // Past the end (u = 1, or rounding): the last possible token takes it.
    probs.iter().rposition(|&q| q > 0.0).unwrap_or(0) as u32
}

impl SamplingParams {
    /// The distribution the next token is drawn from after `history`, with every setting in
    /// transformers' order: logit bias, repetition penalty, temperature, top-k, top-p (greedy:
    /// one-hot on the penalised argmax). It overwrites `logits` with the penalised ones.
    /// OpenAI's presence and frequency penalties need the sampler's own picks:
    /// [`Sampler::distribution`].
    pub fn distribution(&self, logits: &mut [f32], history: &[u32]) -> Vec<f64> {
        self.penalize(logits, history);
        self.probabilities(logits)
    }

    /// `logit_bias`, then CTRL's repetition penalty as transformers applies it: each token seen
    /// once or more has its logit divided by the penalty when positive, multiplied when not.
    fn penalize(&self, logits: &mut [f32], history: &[u32]) {
        for &(id, bias) in &self.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        if self.repetition_penalty == 1.0 {
            return;
        }
        let mut seen = history.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l > 0.0 { *l / self.repetition_penalty } else { *l * self.repetition_penalty };
            }
        }
    }

    /// The distribution the next token is drawn from: temperature, top-k, then top-p applied
    /// to one row of logits (no repetition penalty); greedy is one-hot on the argmax. The
    /// speculative verifier applies it identically to target and draft logits.
    pub fn probabilities(&self, logits: &mut [f32]) -> Vec<f64> {
        if self.is_greedy() {
            let mut one_hot = vec![0.0; logits.len()];
            one_hot[argmax(logits) as usize] = 1.0;
            return one_hot;
        }
        for l in logits.iter_mut() {
            *l /= self.temperature;
        }
        if self.top_k > 0 && self.top_k < logits.len() {
            let mut sorted = logits.to_vec();
            let kth = sorted.len() - self.top_k;
            let (_, threshold, _) = sorted.select_nth_unstable_by(kth, f32::total_cmp);
            let threshold = *threshold;
            for l in logits.iter_mut() {
                if *l < threshold {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= total);
        if self.top_p < 1.0 {
            nucleus(&mut probs, f64::from(self.top_p));
            let kept: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|q| *q /= kept);
        }
        probs
    }
}

/// float32 `log_softmax` of one row (the log-sum-exp accumulated in f64).
pub(crate) fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let (max, log_sum) = log_sum_exp(logits);
    logits.iter().map(|&l| (f64::from(l - max) - log_sum) as f32).collect()
}

/// The largest logit, and `ln Σ exp(l − max)` summed in f64: a softmax's normaliser without
/// overflow. `log_softmax` and the server's `logprobs` both start from it.
fn log_sum_exp(logits: &[f32]) -> (f32, f64) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (max, logits.iter().map(|&l| f64::from(l - max).exp()).sum::<f64>().ln())
}

/// The log-probability of a chosen token and the `k` likeliest tokens' (best first), from the
/// model's raw logits — before temperature and filters, as OpenAI's and vLLM's `logprobs` are.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprobs {
    pub fn new(logits: &[f32], chosen: u32, k: usize) -> Self {
        let (max, log_sum) = log_sum_exp(logits);
        let log_z = max + log_sum as f32;
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
        let mut top: Vec<u32> = (0..logits.len() as u32).collect();
        let k = k.min(top.len());
        if k < top.len() && k > 0 {
            top.select_nth_unstable_by(k - 1, by_logit);
        }
        top.truncate(k);
        top.sort_by(by_logit);
        Self {
            logprob: logits.get(chosen as usize).map_or(f32::NEG_INFINITY, |&l| l - log_z),
            top: top.into_iter().map(|id| (id, logits[id as usize] - log_z)).collect(),
        }
    }
}

/// Index of the largest value, the first one on ties.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// Zeroes every token outside the smallest most-likely set whose mass reaches `top_p`
/// (HF drops tokens whose ascending cumulative mass is `<= 1 - top_p`; at least one stays).
fn nucleus(probs: &mut [f64], top_p: f64) {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let mut cumulative = 0.0;
    let mut keep = 0;
    for &id in &order {
        keep += 1;
        cumulative += probs[id];
        if cumulative >= top_p {
            break;
        }
    }
    for &id in &order[keep..] {
        probs[id] = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams { temperature, top_k, top_p, seed: 7, ..SamplingParams::default() }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(params(0.0, 0, 1.0)).unwrap();
        assert_eq!(s.pick(&mut [1.0, 3.0, 3.0, 2.0], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let mut s = Sampler::new(params(5.0, 1, 1.0)).unwrap();
        for _ in 0..50 {
            assert_eq!(s.pick(&mut [0.1, 0.3, 2.0, 1.9], &[]), 2);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // softmax([5, 4, -5, -5]) ≈ [0.73, 0.27, 3e-5, 3e-5]: top_p 0.9 keeps ids 0 and 1.
        let mut s = Sampler::new(params(1.0, 0, 0.9)).unwrap();
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            seen[s.pick(&mut [5.0, 4.0, -5.0, -5.0], &[]) as usize] += 1;
        }
        assert_eq!(seen[2] + seen[3], 0);
        assert!(seen[0] > seen[1] && seen[1] > 40, "{seen:?}");
    }

    #[test]
    fn same_seed_same_draws() {
        let draw = || {
            let mut s = Sampler::new(params(1.0, 0, 1.0)).unwrap();
            (0..20).map(|_| s.pick(&mut [0.5, 0.4, 0.3, 0.2, 0.1], &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(), draw());
    }

    #[test]
    fn repetition_penalty_follows_hf() {
        // Positive logits are divided, negative ones multiplied.
        let mut s = Sampler::new(SamplingParams { repetition_penalty: 2.0, ..params(0.0, 0, 1.0) }).unwrap();
        assert_eq!(s.pick(&mut [3.0, 2.0, -1.0], &[0]), 1);
        assert_eq!(s.pick(&mut [-0.1, -0.15, -1.0], &[0]), 1);
    }

    #[test]
    fn logprobs_are_a_log_softmax_with_the_best_first() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let lp = TokenLogprobs::new(&logits, 2, 2);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((lp.logprob - (2.0f32.exp() / z).ln()).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 3], "ties go to the lower id");
        assert!((lp.top[0].1 - (3.0f32.exp() / z).ln()).abs() < 1e-6);
        assert!(TokenLogprobs::new(&logits, 0, 0).top.is_empty());
        assert_eq!(TokenLogprobs::new(&logits, 0, 9).top.len(), 4);
    }

    #[test]
    fn pick_follows_the_cumulative_mass_and_never_a_zero() {
        let probs = [0.0, 0.2, 0.0, 0.8, 0.0];
        assert_eq!(pick(&probs, 0.0), 1);
        assert_eq!(pick(&probs, 0.199), 1);
        assert_eq!(pick(&probs, 0.2), 3);
        assert_eq!(pick(&probs, 1.0), 3, "the end of the mass is the last possible token");
        // Unnormalised (a residual): the fraction is of its own total.
        assert_eq!(pick(&[2.0, 6.0], 0.3), 1);
    }

    #[test]
    fn log_softmax_is_the_log_of_the_softmax() {
        let logits = [1.0f32, -2.0, 0.5, 3.0];
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        let ours = log_softmax(&logits);
        assert_eq!(ours.len(), logits.len());
        for (&l, &lp) in logits.iter().zip(&ours) {
            assert!((f64::from(lp) - (f64::from(l).exp() / z).ln()).abs() < 1e-6, "{ours:?}");
        }
    }

    #[test]
    fn absurd_parameters_are_refused() {
        for bad in [params(-1.0, 0, 1.0), params(f32::NAN, 0, 1.0), params(1.0, 0, 0.0), params(1.0, 0, 1.5)] {
            assert!(Sampler::new(bad).is_err());
        }
    }
}
