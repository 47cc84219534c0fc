//! Domain-separated signatures.
//!
//! Every signature in mycel is an Ed25519 signature over the 32-byte digest
//! `blake3(domain ‖ 0x00 ‖ message)`. The domain names the kind of message (`mycel/v1/block`,
//! `mycel/v1/vote`, …), so a signature made for one kind can never be replayed as another; the NUL
//! byte ends the domain, so no domain is a prefix-collision of another. Verification uses
//! `verify_strict` and keys were already checked against small-order points when parsed.

use std::fmt;

use crate::error::{IdentityError, Result};
use crate::key::{Keypair, PublicKey, Signature};

/// A signing domain: a static, NUL-free ASCII name such as `mycel/v1/block`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain(&'static str);

impl Domain {
    /// Declares a domain. Panics at compile time (in a `const`) when the name is empty, not ASCII or
    /// contains NUL, so a bad domain never reaches a running node.
    pub const fn new(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        assert!(!bytes.is_empty(), "a signing domain must not be empty");
        let mut i = 0;
        while i < bytes.len() {
            assert!(
                bytes[i] != 0 && bytes[i].is_ascii(),
                "a signing domain is NUL-free ASCII"
            );
            i += 1;
        }
        Self(name)
    }

    /// The domain's name.
    pub const fn name(&self) -> &'static str {
        self.0
    }

    /// The digest that is actually signed: `blake3(domain ‖ 0x00 ‖ message)`.
    pub fn digest(&self, message: &[u8]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.0.as_bytes());
        hasher.update(&[0]);
        hasher.update(message);
        *hasher.finalize().as_bytes()
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({})", self.0)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The domains mycel signs in. Each message kind has its own; specs/identity.md lists them.
pub mod domains {
    use super::Domain;

    /// Ledger blocks.
    pub const BLOCK: Domain = Domain::new("mycel/v1/block");
    /// Confirmation votes on blocks.
    pub const VOTE: Domain = Domain::new("mycel/v1/vote");
    /// Work receipts (worker signature and requester countersignature).
    pub const RECEIPT: Domain = Domain::new("mycel/v1/receipt");
    /// Audit verdicts of validators.
    pub const VERDICT: Domain = Domain::new("mycel/v1/verdict");
    /// Heartbeat health records.
    pub const HEARTBEAT: Domain = Domain::new("mycel/v1/heartbeat");
    /// Gossiped model manifests.
    pub const MANIFEST: Domain = Domain::new("mycel/v1/manifest");
    /// DID → PeerId records in the DHT.
    pub const PEER_RECORD: Domain = Domain::new("mycel/v1/peer-record");
    /// Consortium membership revocations.
    pub const REVOCATION: Domain = Domain::new("mycel/v1/revocation");
    /// Detached signatures over user files made with `mycel sign`.
    pub const DETACHED: Domain = Domain::new("mycel/v1/detached");
    /// Commitments of shard servers to the activations of a layer span they computed.
    pub const SHARD_SPAN: Domain = Domain::new("mycel/v1/shard-span");
    /// Federated router: a node's signed update of the domain centroids.
    pub const CENTROID_UPDATE: Domain = Domain::new("mycel/v1/centroid-update");
}

impl Keypair {
    /// Signs `message` in `domain`.
    pub fn sign(&self, domain: Domain, message: &[u8]) -> Signature {
        use ed25519_dalek::Signer;
        let digest = domain.digest(message);
        Signature::from_bytes(self.signing_key().sign(&digest).to_bytes())
    }
}

impl PublicKey {
    /// Verifies a signature made by [`Keypair::sign`] with the same domain and message.
    pub fn verify(&self, domain: Domain, message: &[u8], signature: &Signature) -> Result<()> {
        let digest = domain.digest(message);
        self.verifying_key()
            .verify_strict(&digest, &signature.to_dalek())
            .map_err(|_| IdentityError::BadSignature)
    }
}

/// One item of a batch verification: who signed what, in which domain.
#[derive(Clone, Copy, Debug)]
pub struct SignedItem<'a> {
    /// The signing domain.
    pub domain: Domain,
    /// The message bytes (not the digest).
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a Signature,
    /// The signer.
    pub signer: &'a PublicKey,
}

/// Verifies many signatures at once (much faster than one by one). Succeeds only when every
/// signature is valid; on failure, callers that need to know which one failed verify singly.
///
/// Keys are already known not to be weak ([`PublicKey::from_bytes`] refuses them), which is what
/// makes batch verification safe to use here.
pub fn verify_batch(items: &[SignedItem<'_>]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let digests: Vec<[u8; 32]> = items.iter().map(|i| i.domain.digest(i.message)).collect();
    let messages: Vec<&[u8]> = digests.iter().map(|d| d.as_slice()).collect();
    let signatures: Vec<ed25519_dalek::Signature> =
        items.iter().map(|i| i.signature.to_dalek()).collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> =
        items.iter().map(|i| *i.signer.verifying_key()).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).map_err(|_| IdentityError::BadBatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::SecretKey;

    #[test]
    fn signature_verifies_in_its_own_domain_only() {
        let pair = Keypair::generate();
        let sig = pair.sign(domains::BLOCK, b"hello");
        pair.public()
            .verify(domains::BLOCK, b"hello", &sig)
            .expect("own domain");
        assert!(matches!(
            pair.public().verify(domains::VOTE, b"hello", &sig),
            Err(IdentityError::BadSignature)
        ));
    }

    #[test]
    fn domain_boundary_is_unambiguous() {
        // "ab" ‖ "c" and "a" ‖ "bc" must not produce the same digest.
        assert_ne!(
            Domain::new("ab").digest(b"c"),
            Domain::new("a").digest(b"bc")
        );
    }

    #[test]
    fn tampered_message_or_signature_fails() {
        let pair = Keypair::generate();
        let sig = pair.sign(domains::RECEIPT, b"payload");
        assert!(
            pair.public()
                .verify(domains::RECEIPT, b"paylaod", &sig)
                .is_err()
        );
        let mut bytes = sig.to_bytes();
        bytes[5] ^= 1;
        assert!(
            pair.public()
                .verify(domains::RECEIPT, b"payload", &Signature::from_bytes(bytes))
                .is_err()
        );
        let other = Keypair::generate();
        assert!(
            other
                .public()
                .verify(domains::RECEIPT, b"payload", &sig)
                .is_err()
        );
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point (0, 1) and the order-2 point (0, -1), both small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut minus_one = [0xFFu8; 32];
        minus_one[0] = 0xEC;
        minus_one[31] = 0x7F;
        for bytes in [identity, minus_one] {
            assert!(matches!(
                PublicKey::from_bytes(&bytes),
                Err(IdentityError::WeakKey)
            ));
        }
    }

    #[test]
    fn signing_is_deterministic_for_a_seed() {
        let pair = Keypair::from_secret(&SecretKey::from_bytes([7; 32]));
        assert_eq!(
            pair.sign(domains::VOTE, b"m"),
            pair.sign(domains::VOTE, b"m")
        );
    }

    #[test]
    fn batch_accepts_valid_and_rejects_one_bad() {
        let pairs: Vec<Keypair> = (0..16).map(|_| Keypair::generate()).collect();
        let publics: Vec<PublicKey> = pairs.iter().map(Keypair::public).collect();
        let messages: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i; 40]).collect();
        let mut sigs: Vec<Signature> = pairs
            .iter()
            .zip(&messages)
            .map(|(p, m)| p.sign(domains::VOTE, m))
            .collect();
        let items = |sigs: &[Signature]| -> Vec<(usize, Signature)> {
            sigs.iter().copied().enumerate().collect()
        };
        let check = |sigs: &[Signature]| {
            let owned = items(sigs);
            let batch: Vec<SignedItem<'_>> = owned
                .iter()
                .map(|(i, s)| SignedItem {
                    domain: domains::VOTE,
                    message: &messages[*i],
                    signature: s,
                    signer: &publics[*i],
                })
                .collect();
            verify_batch(&batch)
        };
        check(&sigs).expect("all valid");
        sigs[9] = pairs[9].sign(domains::BLOCK, &messages[9]);
        assert!(matches!(check(&sigs), Err(IdentityError::BadBatch)));
    }
}
