//! GPT-2's byte-level BPE, through the `tokenizers` crate on a HF `tokenizer.json`.
//! Built with `unstable_wasm` (fancy-regex instead of oniguruma) so the same code runs in the
//! browser. Like transformers: no prefix space is added, `<|endoftext|>` in the text is the
//! special token, decoding never cleans up spaces and maps broken UTF-8 to U+FFFD.

use crate::engine::error::{EngineError, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn from_bytes(json: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(json)
            .map_err(|e| EngineError::Tokenizer(format!("tokenizer.json could not be loaded: {e}")))?;
        Ok(Self { inner })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| EngineError::Tokenizer(format!("could not encode text: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes ids to text, keeping special tokens unless `skip_special` is set.
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| EngineError::Tokenizer(format!("could not decode ids: {e}")))
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_with(ids, false)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
