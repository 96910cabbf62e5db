//! GPT-2 and how it gets onto a device: its config (checked before anything is allocated), its
//! weights (read whole, streamed in blocks of rows, or drawn at random; converted to a
//! precision), the token table, the forward pass, and the tokenizer.

pub mod config;
pub mod gpt2;
pub mod precision;
pub mod safetensors_stream;
pub mod tokenizer;
pub mod vocab_table;
pub mod weight_dtype;
pub mod weights;
