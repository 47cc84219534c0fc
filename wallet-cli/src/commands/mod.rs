//! One module per command group.

pub mod credential;
pub mod did;
pub mod key;
pub mod ledger;
pub mod node;
pub mod signature;
