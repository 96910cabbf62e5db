//! The Inside-a-step page's job: inspect a prompt and put text to every token it shows.

use super::error::Result;
use super::protocol::InspectionView;
use crate::engine::error::EngineError;
use crate::engine::inspect::inspect as inspect_ids;
use crate::engine::inspect::op_timer::Clock;
use crate::engine::model::gpt2::Gpt2;
use crate::engine::model::tokenizer::Tokenizer;

/// Most prompt tokens the page inspects: its pictures draw every query × key of every head.
pub const MAX_TOKENS: usize = 48;

pub async fn inspect(model: &Gpt2, tokenizer: &Tokenizer, prompt: &str, clock: Clock) -> Result<InspectionView> {
    let ids = tokenizer.encode(prompt)?;
    if ids.len() > MAX_TOKENS {
        return Err(EngineError::Request(format!(
            "the page inspects prompts of up to {MAX_TOKENS} tokens (this one has {}); `inferlab inspect` takes longer ones",
            ids.len()
        ))
        .into());
    }
    let inspection = inspect_ids(model, &ids, clock).await?;
    let text = |id: u32| tokenizer.decode(&[id]);
    let tokens = ids.iter().map(|&id| text(id)).collect::<Result<_, _>>()?;
    let lens_tokens = inspection
        .logit_lens
        .iter()
        .map(|layer| layer.positions.iter().map(|top| top.ids.iter().map(|&id| text(id)).collect()).collect())
        .collect::<Result<_, _>>()?;
    let next_text = text(inspection.next_token)?;
    Ok(InspectionView { inspection, tokens, lens_tokens, next_text })
}
