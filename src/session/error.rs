//! What can go wrong in a page's job. The page is told it as text (`FromEngine::Error {
//! message }`); inside the engine it stays typed until a transport sends it.

use crate::engine::error::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Anything the engine refused or failed at: its message says what to fix.
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("no model is loaded yet")]
    NoModel,
    #[error("loading is the transport's job")]
    LoadIsTransports,
    #[error("config.json is not UTF-8 text")]
    ConfigNotUtf8,
    /// What a transport met fetching or reading a model's files.
    #[error("{0}")]
    Transport(String),
}

impl From<String> for SessionError {
    fn from(message: String) -> Self {
        Self::Transport(message)
    }
}

pub type Result<T, E = SessionError> = std::result::Result<T, E>;
