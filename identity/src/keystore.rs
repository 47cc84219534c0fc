//! Encrypted keystore. Being built.

/// Keystore failures.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// Placeholder.
    #[error("keystore is not built yet")]
    NotBuilt,
}
