//! Integration tests of mycel-models through its public API (one test binary).
#![allow(clippy::unwrap_used, missing_docs)]

mod inference;
mod pull;
mod real_model;
