//! Integration tests of the mycel-tests crate: the TestNet harness itself (kill, restart,
//! partition, delay) and the short forms of the churn and load simulations, run through the same
//! binaries as the long forms.

#![allow(clippy::unwrap_used)]

mod harness;
mod simulations;
