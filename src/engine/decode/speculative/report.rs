//! What a speculative run achieved next to plain decoding in the same process, and what the
//! theory promises for the measured α and cost ratio c.

use super::{SpeculativeOptions, SpeculativeRun};
use crate::engine::decode::generate::Generation;

/// How α is measured, printed beside it.
pub const ALPHA_DEFINITION: &str = "accepted draft tokens / draft tokens tested by the target (each pass tests up to and including its first rejection)";

/// Expected speedup of Leviathan et al.: (1 − α^{γ+1}) / ((1 − α)(γc + 1)), the tokens a pass
/// yields over its cost in target steps.
pub fn theoretical_speedup(alpha: f64, gamma: f64, c: f64) -> f64 {
    tokens_per_pass(alpha, gamma) / (gamma * c + 1.0)
}

/// Expected tokens per target pass, (1 − α^{γ+1}) / (1 − α) (γ + 1 when α = 1).
pub fn tokens_per_pass(alpha: f64, gamma: f64) -> f64 {
    if (1.0 - alpha).abs() < 1e-12 { gamma + 1.0 } else { (1.0 - alpha.powf(gamma + 1.0)) / (1.0 - alpha) }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpeculativeReport {
    pub drafter: String,
    pub gamma: usize,
    pub adaptive_gamma: bool,
    /// The mean draft length actually run (the γ the theory is evaluated at).
    pub mean_gamma: f64,
    pub alpha: f64,
    pub alpha_definition: String,
    pub tokens_per_target_pass: f64,
    pub accepted_hist: Vec<usize>,
    /// Draft cost per drafted token over the target's plain decode step cost.
    pub c: f64,
    pub theoretical_speedup: f64,
    /// Plain decoding's time per token over speculative decoding's (prefills excluded).
    pub measured_speedup: f64,
    pub passes: usize,
    pub draft_ms_per_token: f64,
    /// A target pass over γ + 1 positions, in plain decode steps: the theory assumes 1 (true
    /// where a step is bound by reading the weights once, as on a GPU).
    pub target_pass_in_steps: f64,
    pub plain_ms_per_token: f64,
    pub speculative_ms_per_token: f64,
}

impl SpeculativeReport {
    /// Compares `run` with `plain`, a plain decode of the same prompt on the same device.
    pub fn new(drafter: &str, options: &SpeculativeOptions, run: &SpeculativeRun, plain: &Generation) -> Self {
        let plain_ms_per_token = plain_ms_per_token(plain);
        let speculative_ms_per_token = run.decode_ms / run.new_ids.len().max(1) as f64;
        let (alpha, mean_gamma) = (run.alpha(), run.mean_gamma());
        let c = if plain_ms_per_token > 0.0 { run.draft_ms_per_token() / plain_ms_per_token } else { 0.0 };
        Self {
            drafter: drafter.to_string(),
            gamma: options.gamma,
            adaptive_gamma: options.adaptive_gamma,
            mean_gamma,
            alpha,
            alpha_definition: ALPHA_DEFINITION.into(),
            tokens_per_target_pass: run.tokens_per_pass(),
            accepted_hist: run.accepted_hist(),
            c,
            theoretical_speedup: theoretical_speedup(alpha, mean_gamma, c),
            measured_speedup: if speculative_ms_per_token > 0.0 {
                plain_ms_per_token / speculative_ms_per_token
            } else {
                0.0
            },
            passes: run.passes.len(),
            draft_ms_per_token: run.draft_ms_per_token(),
            target_pass_in_steps: run.passes.iter().map(|p| p.target_ms).sum::<f64>()
                / run.passes.len().max(1) as f64
                / plain_ms_per_token.max(1e-9),
            plain_ms_per_token,
            speculative_ms_per_token,
        }
    }
}

/// Plain decoding's time per token after the first (whose step holds the prefill).
pub fn plain_ms_per_token(plain: &Generation) -> f64 {
    match plain.step_ms.len() {
        0 => 0.0,
        1 => plain.step_ms[0],
        n => plain.step_ms[1..].iter().sum::<f64>() / (n - 1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theory_matches_its_limits() {
        // α = 0: one token a pass, paid γc + 1.
        assert!((theoretical_speedup(0.0, 4.0, 0.5) - 1.0 / 3.0).abs() < 1e-12);
        // α = 1: γ + 1 tokens a pass; a free drafter gives γ + 1.
        assert!((theoretical_speedup(1.0, 4.0, 0.0) - 5.0).abs() < 1e-12);
        // Leviathan et al., Table/Fig. 3 shape: α 0.8, γ 4, c 0.05 → ≈ 2.8.
        let s = theoretical_speedup(0.8, 4.0, 0.05);
        assert!((s - 3.3616 / 1.2).abs() < 1e-3, "{s}");
    }
}
