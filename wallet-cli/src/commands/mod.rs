//! One module per command group.

pub mod credential;
pub mod did;
pub mod key;
pub mod node;
pub mod signature;
