//! Signed centroid updates gossiped on [`CENTROID_TOPIC`].
//!
//! The body is the JSON of a [`CentroidUpdate`]; the signature covers its exact bytes in the
//! `mycel/v1/centroid-update` domain with the node key, and the signer must be the gossip message's
//! source peer. [`CentroidUpdate::verify`] checks, in this order and before anything else reads the
//! update: size ([`MAX_UPDATE_BYTES`], before parsing), envelope, signature, body, domain tag,
//! dimension (the router's, at most [`MAX_DIM`]), finite values, norm ([`MAX_UPDATE_NORM`]), round
//! ([`MAX_ROUND`]) and a non-zero example count.

use mycel_identity::{Keypair, PeerId, PublicKey, Signature, domains};
use serde::{Deserialize, Serialize};

use super::{DomainTag, l2_norm};

/// Gossipsub topic of centroid updates.
pub const CENTROID_TOPIC: &str = "mycel/centroids/1";

/// Largest encoded update accepted, checked before parsing. A 4096-dimensional update with
/// worst-case float spellings (14 bytes a value) is about 58 KiB.
pub const MAX_UPDATE_BYTES: usize = 64 * 1024;

/// Largest embedding dimension of any update (MiniLM has 384).
pub const MAX_DIM: usize = 4096;

/// Largest L2 norm of an update's vector: the clipped mean is at most 1 long and an update's noise
/// about [`super::privacy::MAX_NOISE_NORM`] = 1, so honest updates stay well below 3.
pub const MAX_UPDATE_NORM: f32 = 3.0;

/// Largest round number. Rounds are small counters (epochs or hours); a higher one is an error.
pub const MAX_ROUND: u64 = u32::MAX as u64;

/// A node's estimate of one domain's centroid for one round.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CentroidUpdate {
    /// The domain.
    pub domain: DomainTag,
    /// The sender's round; a peer's later round replaces its earlier one.
    pub round: u64,
    /// The clipped, noised mean of the sender's examples.
    pub vector: Vec<f32>,
    /// The sender's example count, rounded down to a power of two.
    pub examples: u32,
}

/// The wire form of a [`CentroidUpdate`] before its checks.
#[derive(Deserialize)]
struct Body {
    domain: String,
    round: u64,
    vector: Vec<f32>,
    examples: u32,
}

/// An update and its signature, as gossiped.
#[derive(Serialize, Deserialize)]
struct SignedUpdate {
    /// The JSON of a [`CentroidUpdate`].
    body: String,
    /// Hex Ed25519 signature over `body` in the centroid-update domain.
    signature: String,
}

/// Why a received update was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpdateRejected {
    /// Larger than [`MAX_UPDATE_BYTES`].
    #[error("update larger than {MAX_UPDATE_BYTES} bytes")]
    TooLarge,
    /// Not a signed update, or a body that does not parse.
    #[error("malformed update")]
    Malformed,
    /// Not signed by the source peer.
    #[error("bad signature")]
    BadSignature,
    /// Domain tag outside `[a-z0-9-]{1,32}`.
    #[error("bad domain tag")]
    BadDomain,
    /// Dimension other than the router's.
    #[error("update has {got} dimensions, expected {expected}")]
    BadDimension {
        /// The router's dimension.
        expected: usize,
        /// The update's.
        got: usize,
    },
    /// A NaN or infinite coordinate.
    #[error("non-finite coordinate")]
    NonFinite,
    /// Norm above [`MAX_UPDATE_NORM`].
    #[error("norm above {MAX_UPDATE_NORM}")]
    TooLong,
    /// Round above [`MAX_ROUND`].
    #[error("round above {MAX_ROUND}")]
    BadRound,
    /// An example count of zero.
    #[error("no examples")]
    NoExamples,
}

impl CentroidUpdate {
    /// Signs and encodes this update for gossip.
    pub fn sign(&self, key: &Keypair) -> Vec<u8> {
        let body = serde_json::to_string(self).unwrap_or_default();
        let signature = key.sign(domains::CENTROID_UPDATE, body.as_bytes()).to_hex();
        serde_json::to_vec(&SignedUpdate { body, signature }).unwrap_or_default()
    }

    /// Decodes and checks gossip bytes from `source` for a router of dimension `dim`.
    pub fn verify(bytes: &[u8], source: &PeerId, dim: usize) -> Result<Self, UpdateRejected> {
        if bytes.len() > MAX_UPDATE_BYTES {
            return Err(UpdateRejected::TooLarge);
        }
        let signed: SignedUpdate =
            serde_json::from_slice(bytes).map_err(|_| UpdateRejected::Malformed)?;
        let key = PublicKey::from_peer_id(source).map_err(|_| UpdateRejected::BadSignature)?;
        let sig =
            Signature::from_hex(&signed.signature).map_err(|_| UpdateRejected::BadSignature)?;
        key.verify(domains::CENTROID_UPDATE, signed.body.as_bytes(), &sig)
            .map_err(|_| UpdateRejected::BadSignature)?;
        let body: Body =
            serde_json::from_str(&signed.body).map_err(|_| UpdateRejected::Malformed)?;
        let update = Self {
            domain: body.domain.parse().map_err(|_| UpdateRejected::BadDomain)?,
            round: body.round,
            vector: body.vector,
            examples: body.examples,
        };
        update.check(dim)?;
        Ok(update)
    }

    /// The checks of [`Self::verify`] after the signature, for an update of a router of dimension
    /// `dim`.
    pub fn check(&self, dim: usize) -> Result<(), UpdateRejected> {
        let got = self.vector.len();
        if got != dim || got > MAX_DIM {
            return Err(UpdateRejected::BadDimension { expected: dim, got });
        }
        if self.vector.iter().any(|x| !x.is_finite()) {
            return Err(UpdateRejected::NonFinite);
        }
        // The norm of finite values may overflow to +inf, which fails here too.
        if l2_norm(&self.vector) > MAX_UPDATE_NORM {
            return Err(UpdateRejected::TooLong);
        }
        if self.round > MAX_ROUND {
            return Err(UpdateRejected::BadRound);
        }
        if self.examples == 0 {
            return Err(UpdateRejected::NoExamples);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn update(dim: usize) -> CentroidUpdate {
        CentroidUpdate {
            domain: "cooking".parse().expect("tag"),
            round: 7,
            vector: (0..dim).map(|i| if i == 0 { 0.6 } else { 0.01 }).collect(),
            examples: 256,
        }
    }

    /// Signs an arbitrary body, so each check can be reached past the signature.
    fn signed_body(key: &Keypair, body: &str) -> Vec<u8> {
        let signature = key.sign(domains::CENTROID_UPDATE, body.as_bytes()).to_hex();
        serde_json::to_vec(&SignedUpdate {
            body: body.to_owned(),
            signature,
        })
        .expect("json")
    }

    #[test]
    fn updates_verify_only_from_their_signer_and_untampered() {
        let key = Keypair::generate();
        let other = Keypair::generate();
        let u = update(4);
        let bytes = u.sign(&key);
        assert_eq!(CentroidUpdate::verify(&bytes, &key.peer_id(), 4), Ok(u));
        assert_eq!(
            CentroidUpdate::verify(&bytes, &other.peer_id(), 4),
            Err(UpdateRejected::BadSignature)
        );
        let tampered = String::from_utf8(bytes)
            .expect("json")
            .replace("cooking", "finance");
        assert_eq!(
            CentroidUpdate::verify(tampered.as_bytes(), &key.peer_id(), 4),
            Err(UpdateRejected::BadSignature)
        );
        // A valid signature in another domain does not count.
        let body = serde_json::to_string(&update(4)).expect("json");
        let wrong_domain = serde_json::to_vec(&SignedUpdate {
            signature: key.sign(domains::HEARTBEAT, body.as_bytes()).to_hex(),
            body,
        })
        .expect("json");
        assert_eq!(
            CentroidUpdate::verify(&wrong_domain, &key.peer_id(), 4),
            Err(UpdateRejected::BadSignature)
        );
        assert_eq!(
            CentroidUpdate::verify(b"\xff garbage", &key.peer_id(), 4),
            Err(UpdateRejected::Malformed)
        );
    }

    #[test]
    fn every_rule_rejects_its_case() {
        let key = Keypair::generate();
        let peer = key.peer_id();
        let cases = [
            (
                r#"{"domain":"Cooking","round":1,"vector":[0.5,0.5],"examples":8}"#,
                UpdateRejected::BadDomain,
            ),
            (
                r#"{"domain":"a-very-long-domain-tag-beyond-32-bytes","round":1,"vector":[0.5,0.5],"examples":8}"#,
                UpdateRejected::BadDomain,
            ),
            (
                r#"{"domain":"cooking","round":1,"vector":[0.5,0.5,0.5],"examples":8}"#,
                UpdateRejected::BadDimension {
                    expected: 2,
                    got: 3,
                },
            ),
            // JSON has no NaN or infinity, and serde_json refuses values beyond f32.
            (
                r#"{"domain":"cooking","round":1,"vector":[1e39,0.5],"examples":8}"#,
                UpdateRejected::Malformed,
            ),
            (
                r#"{"domain":"cooking","round":1,"vector":[null,0.5],"examples":8}"#,
                UpdateRejected::Malformed,
            ),
            (
                r#"{"domain":"cooking","round":1,"vector":[2.5,2.5],"examples":8}"#,
                UpdateRejected::TooLong,
            ),
            (
                r#"{"domain":"cooking","round":4294967296,"vector":[0.5,0.5],"examples":8}"#,
                UpdateRejected::BadRound,
            ),
            (
                r#"{"domain":"cooking","round":1,"vector":[0.5,0.5],"examples":0}"#,
                UpdateRejected::NoExamples,
            ),
            (
                r#"{"domain":"cooking","round":-1,"vector":[0.5,0.5],"examples":8}"#,
                UpdateRejected::Malformed,
            ),
        ];
        for (body, reason) in cases {
            assert_eq!(
                CentroidUpdate::verify(&signed_body(&key, body), &peer, 2),
                Err(reason),
                "{body}"
            );
        }
        let ok = r#"{"domain":"cooking","round":4294967295,"vector":[0.5,0.5],"examples":8}"#;
        assert!(CentroidUpdate::verify(&signed_body(&key, ok), &peer, 2).is_ok());
        // The size limit applies before parsing, whatever the bytes are.
        let huge = vec![b' '; MAX_UPDATE_BYTES + 1];
        assert_eq!(
            CentroidUpdate::verify(&huge, &peer, 2),
            Err(UpdateRejected::TooLarge)
        );
        // Non-finite values can only come from elsewhere than the wire.
        let mut nan = update(2);
        nan.vector[1] = f32::NAN;
        assert_eq!(nan.check(2), Err(UpdateRejected::NonFinite));
        // A router dimension above the limit accepts nothing.
        let wide = update(MAX_DIM + 1);
        assert!(matches!(
            wide.check(MAX_DIM + 1),
            Err(UpdateRejected::BadDimension { .. })
        ));
    }

    #[test]
    fn the_largest_update_fits_the_byte_limit() {
        let key = Keypair::generate();
        let mut u = update(MAX_DIM);
        // The longest spelling of a small f32: sign, 8 significant digits, exponent.
        u.vector = vec![-1.234_567_8e-7; MAX_DIM];
        let bytes = u.sign(&key);
        assert!(bytes.len() <= MAX_UPDATE_BYTES, "{} bytes", bytes.len());
        assert_eq!(
            CentroidUpdate::verify(&bytes, &key.peer_id(), MAX_DIM),
            Ok(u)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_refused_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let peer = Keypair::generate().peer_id();
            prop_assert!(CentroidUpdate::verify(&bytes, &peer, 4).is_err());
        }

        #[test]
        fn valid_updates_round_trip(
            domain in "[a-z0-9-]{1,32}",
            round in 0..=MAX_ROUND,
            vector in proptest::collection::vec(-0.3f32..0.3, 8),
            examples in 1u32..,
        ) {
            let key = Keypair::generate();
            let u = CentroidUpdate {
                domain: domain.parse().expect("tag"),
                round,
                vector,
                examples,
            };
            prop_assert_eq!(CentroidUpdate::verify(&u.sign(&key), &key.peer_id(), 8), Ok(u));
        }
    }
}
