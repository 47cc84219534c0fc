//! mycel's models: the registry, pulling and verifying weights, CPU inference with candle,
//! layer-range (sharded) execution, sampling, token streaming, verification scoring and
//! embeddings.
//!
//! Place in the architecture: the node (`mycel-node`) owns networking and calls this crate to
//! pull models into its data dir, load them and serve sessions. This crate does no networking
//! beyond fetching model files, and nothing it loads has escaped sha256 verification
//! ([`VerifiedModel`]). Normative formats are in `specs/models.md`.
//!
//! Typical use by the node:
//!
//! ```no_run
//! # fn main() -> mycel_models::Result<()> {
//! use std::sync::Arc;
//! use mycel_models::*;
//! let registry = Registry::load_default()?;
//! let entry = registry.get(registry::DEFAULT_CHAT_MODEL)?;
//! let verified = pull(entry, std::path::Path::new("data/models"), None, |p| {
//!     eprintln!("{:?} {} {}/{:?}", p.stage, p.file, p.done, p.total)
//! })?;
//! let model = Arc::new(ChatModel::load(&verified, &LoadOptions::default())?);
//! let (tx, mut rx) = tokio::sync::mpsc::channel(TOKEN_CHANNEL_CAPACITY);
//! let handle = spawn_generate(
//!     model.clone(),
//!     model.new_session(),
//!     vec![ChatMessage::user("What is the capital of France?")],
//!     SamplingParams::default(),
//!     tx,
//! );
//! // Receive `Token`s from `rx`; dropping `rx` cancels the generation.
//! # drop((handle, rx)); Ok(()) }
//! ```

pub mod bench;
pub mod chat;
mod download;
pub mod embed;
pub mod error;
pub mod hidden;
pub mod llama;
pub mod pull;
pub mod pypi;
mod q8;
pub mod registry;
pub mod sampling;
pub mod template;
pub mod tiny;
pub mod tokenizer;
pub mod verify;

pub use chat::{
    ChatFrontend, ChatModel, Completion, FinishReason, LoadOptions, Session,
    TOKEN_CHANNEL_CAPACITY, Token, gguf_config, hidden_to_wire, spawn_generate,
};
pub use embed::EmbeddingModel;
pub use error::{ModelsError, Result};
pub use hidden::{HiddenStates, SKETCH_DIM, WireDType, sketches_match};
pub use llama::{LayerRange, StageInput, StageOutput};
pub use pull::{
    CacheStatus, Progress, PullOptions, Stage, VerifiedModel, cache_status, pull,
    pull_with_options, verify_cached,
};
pub use pypi::PyPiIndex;
pub use registry::{
    Architecture, ChatTemplate, ModelEntry, ModelFile, ModelId, ModelKind, Registry, Sha256Digest,
    Source, SourceSpec,
};
pub use sampling::SamplingParams;
pub use template::{ChatMessage, Role};
pub use verify::{TokenScore, Verdict, VerifyPolicy};
