//! The engine's one error type: every failure a user can cause (bad files, bad parameters,
//! prompts that do not fit) becomes a variant with a message that says what to fix.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    /// config.json is unreadable, or describes a model the engine cannot run.
    #[error("invalid config: {0}")]
    Config(String),
    /// The weight file is malformed or does not match the config.
    #[error("invalid weights: {0}")]
    Weights(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A request the engine refuses: empty prompt, prompt past the context, absurd sampling values.
    #[error("invalid request: {0}")]
    Request(String),
    /// The device failed while running or reading back a tensor.
    #[error("device: {0}")]
    Device(String),
}

pub type Result<T> = std::result::Result<T, EngineError>;
