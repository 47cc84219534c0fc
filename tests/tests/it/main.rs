//! Integration tests of the mycel-tests crate: the TestNet harness itself (kill, restart,
//! partition, delay) and the short forms of the churn and load simulations and of the robustness
//! fuzz run, run through the same binaries as the long forms.

#![allow(clippy::unwrap_used)]

mod fuzz;
mod harness;
mod simulations;
