//! The crate's error type.

use std::path::PathBuf;

/// What went wrong in the harness, a client or a simulation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A node failed to start or answer its handle.
    #[error("node {index}: {source}")]
    Node {
        /// The node's index in the TestNet.
        index: usize,
        /// The node's error.
        source: mycel_node::NodeError,
    },
    /// The index names no node of the TestNet.
    #[error("no node {0} in this TestNet")]
    NoSuchNode(usize),
    /// The node exists but is not running (killed or stopped).
    #[error("node {0} is not running; restart it first")]
    NotRunning(usize),
    /// The node is running and cannot be restarted.
    #[error("node {0} is already running")]
    AlreadyRunning(usize),
    /// A condition was not met in time.
    #[error("timed out after {secs:.1}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: f64,
    },
    /// An HTTP or WebSocket exchange failed below the application level.
    #[error("{url}: {message}")]
    Http {
        /// The URL asked.
        url: String,
        /// What failed.
        message: String,
    },
    /// A reply did not have the expected shape.
    #[error("unexpected reply from {url}: {message}")]
    Protocol {
        /// The URL asked.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// A file or socket operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or address involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A bad argument (simulation parameters, topology, …).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
