//! Consortium membership credentials (W3C VC-JWT, EdDSA). Being built.

/// Why a membership credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Placeholder until the module lands.
    #[error("credential support is not built yet")]
    NotBuilt,
}
