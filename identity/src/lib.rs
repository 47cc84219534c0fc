//! mycel identities: the bottom of the stack, used by the ledger, the node and the wallet.
//!
//! - [`Keypair`] / [`PublicKey`] / [`Signature`]: Ed25519 keys; secrets are zeroized and never shown.
//! - [`Did`]: `did:key` identifiers and their DID documents; [`PeerId`] conversions for libp2p.
//! - [`Domain`] and [`domains`]: every signature is over `blake3(domain ‖ 0x00 ‖ message)`, verified
//!   with `verify_strict`; [`verify_batch`] checks many at once.
//! - [`credential`]: W3C Verifiable Credentials of consortium membership (VC-JWT, EdDSA).
//! - [`revocation`]: signed revocations of consortium memberships.
//! - [`keystore`]: password-encrypted key files (argon2id + XChaCha20-Poly1305).
//!
//! The normative description is `specs/identity.md`.

pub mod credential;
pub mod did;
pub mod error;
pub mod key;
pub mod keystore;
pub mod peer;
pub mod revocation;
pub mod signing;

pub use did::{Did, DocumentFormat};
pub use error::{IdentityError, Result};
pub use key::{Keypair, PublicKey, SecretKey, Signature};
pub use peer::PeerId;
pub use signing::{Domain, SignedItem, domains, verify_batch};
