//! From logits to text: sampling in transformers' order, generation one token a step, beam
//! search, speculative decoding with its drafters, and text streamed with stop strings.

pub mod beam;
pub mod generate;
pub mod sampling;
pub mod speculative;
pub mod text_stream;
