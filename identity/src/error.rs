//! The identity crate's one error type.

/// Everything that can go wrong with keys, DIDs, signatures, credentials and the keystore.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A DID string is not a well-formed Ed25519 `did:key`.
    #[error("invalid DID `{did}`: {reason}")]
    InvalidDid {
        /// The offending input (a DID is public, so it may be echoed).
        did: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Bytes that should be an Ed25519 public key are not a valid curve point.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    /// The public key is of small order: it would accept forged signatures, so it is refused.
    #[error("weak public key (small-order point) refused")]
    WeakKey,
    /// A secret key or seed has the wrong length or encoding. The input itself is never echoed.
    #[error("invalid secret key: {0}")]
    InvalidSecretKey(&'static str),
    /// A signature has the wrong length or encoding.
    #[error("malformed signature: {0}")]
    MalformedSignature(&'static str),
    /// The signature does not verify for this key, domain and message.
    #[error("signature verification failed")]
    BadSignature,
    /// A batch contained at least one signature that does not verify.
    #[error("batch verification failed: at least one signature is invalid")]
    BadBatch,
    /// Batch input slices of different lengths.
    #[error("batch verification: {messages} messages, {signatures} signatures, {keys} keys")]
    BatchLengthMismatch {
        /// Number of messages.
        messages: usize,
        /// Number of signatures.
        signatures: usize,
        /// Number of keys.
        keys: usize,
    },
    /// A libp2p key or PeerId is not Ed25519 or cannot be converted.
    #[error("libp2p key conversion: {0}")]
    PeerConversion(String),
    /// Keystore errors.
    #[error(transparent)]
    Keystore(#[from] crate::keystore::KeystoreError),
    /// Credential errors.
    #[error(transparent)]
    Credential(#[from] crate::credential::CredentialError),
}

/// Result alias for this crate.
pub type Result<T, E = IdentityError> = std::result::Result<T, E>;
