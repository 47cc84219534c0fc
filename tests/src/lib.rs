//! TestNet harness, seeded simulations and end-to-end tests that span several mycel crates.
//!
//! Empty until the node exists (issue [8/8]); the per-crate tests live next to their code.
