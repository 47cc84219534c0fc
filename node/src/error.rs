//! The node's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in `mycel-node`. Each variant says what happened and, where it
/// helps, what to do.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A request from a user or a peer is malformed or out of range (maps to HTTP 400).
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// No local model and no reachable provider serves this model (maps to HTTP 404).
    #[error("model `{0}` is not served by this node or any reachable peer (see GET /v1/models)")]
    ModelNotFound(String),

    /// Every provider tried failed or timed out (maps to HTTP 502).
    #[error("no provider answered for model `{model}`: {reasons}")]
    UpstreamFailed {
        /// Requested model.
        model: String,
        /// One reason per provider tried.
        reasons: String,
    },

    /// The node is at its concurrency limit (maps to HTTP 503).
    #[error("node is busy ({0}); retry later")]
    Busy(String),

    /// The model failed while generating.
    #[error("inference failed: {0}")]
    Inference(String),

    /// Loading or pulling a model failed.
    #[error(transparent)]
    Models(#[from] mycel_models::ModelsError),

    /// A key, DID or PeerId operation failed.
    #[error(transparent)]
    Identity(#[from] mycel_identity::IdentityError),

    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),

    /// The ledger refused a block, its file failed, or the node keeps no ledger.
    #[error("ledger: {0}")]
    Ledger(String),

    /// The libp2p network failed to start or its actor stopped.
    #[error("network: {0}")]
    Network(String),

    /// A file-system operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl NodeError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, NodeError>;
