//! From logits to text: sampling in transformers' order, generation one token a step, beam
//! search, speculative decoding with its drafters, text streamed with stop strings, and
//! scoring a given text (prompt log-probs, perplexity).

pub mod beam;
pub mod generate;
pub mod sampling;
pub mod scoring;
pub mod speculative;
pub mod text_stream;
