//! Conversions between mycel keys and libp2p identities.
//!
//! A node's libp2p `PeerId` is derived from the same 32-byte Ed25519 key as its DID, so either one
//! names the other.

use libp2p_identity as lp;

use crate::did::Did;
use crate::error::{IdentityError, Result};
use crate::key::{Keypair, PublicKey};

pub use libp2p_identity::PeerId;

impl Keypair {
    /// The libp2p key pair for the same Ed25519 secret (for the node's Swarm).
    pub fn to_libp2p(&self) -> lp::Keypair {
        // `ed25519_from_bytes` zeroizes the buffer it is given; hand it a copy we own.
        let mut seed = *self.secret().expose();
        lp::Keypair::ed25519_from_bytes(&mut seed)
            .expect("a 32-byte Ed25519 seed is always accepted by libp2p")
    }

    /// The libp2p `PeerId` of this key.
    pub fn peer_id(&self) -> PeerId {
        self.public().peer_id()
    }
}

impl PublicKey {
    /// The libp2p public key for the same Ed25519 key.
    pub fn to_libp2p(&self) -> lp::PublicKey {
        lp::PublicKey::from(
            lp::ed25519::PublicKey::try_from_bytes(self.as_bytes())
                .expect("a validated Ed25519 key is always accepted by libp2p"),
        )
    }

    /// The libp2p `PeerId` of this key.
    pub fn peer_id(&self) -> PeerId {
        self.to_libp2p().to_peer_id()
    }

    /// The key behind a libp2p public key; only Ed25519 keys qualify.
    pub fn from_libp2p(key: &lp::PublicKey) -> Result<Self> {
        let ed = key
            .clone()
            .try_into_ed25519()
            .map_err(|_| IdentityError::PeerConversion("not an Ed25519 key".into()))?;
        Self::from_bytes(&ed.to_bytes())
    }

    /// The key inlined in an Ed25519 `PeerId` (identity multihash of the protobuf-encoded key).
    pub fn from_peer_id(peer: &PeerId) -> Result<Self> {
        let multihash = peer.as_ref();
        if multihash.code() != 0 {
            return Err(IdentityError::PeerConversion(
                "PeerId does not inline its key (not an Ed25519 PeerId)".into(),
            ));
        }
        let key = lp::PublicKey::try_decode_protobuf(multihash.digest())
            .map_err(|e| IdentityError::PeerConversion(e.to_string()))?;
        Self::from_libp2p(&key)
    }
}

impl Did {
    /// The libp2p `PeerId` for the key this DID names.
    pub fn peer_id(&self) -> PeerId {
        self.public_key().peer_id()
    }

    /// The DID for an Ed25519 `PeerId`.
    pub fn from_peer_id(peer: &PeerId) -> Result<Self> {
        PublicKey::from_peer_id(peer).map(Did::from_public_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::key::SecretKey;

    #[test]
    fn libp2p_keypair_has_the_same_public_key() {
        let pair = Keypair::generate();
        let lp_pair = pair.to_libp2p();
        assert_eq!(lp_pair.public(), pair.public().to_libp2p());
        assert_eq!(lp_pair.public().to_peer_id(), pair.peer_id());
        // The secret handed to libp2p was a copy: ours is intact.
        assert_eq!(Keypair::from_secret(&pair.secret()).public(), pair.public());
    }

    #[test]
    fn non_ed25519_peer_ids_are_refused() {
        // A sha2-256 multihash PeerId (as RSA keys get) does not inline an Ed25519 key.
        let mut bytes = vec![0x12, 0x20];
        bytes.extend([7u8; 32]);
        let hashed = PeerId::from_bytes(&bytes).expect("valid multihash");
        assert!(Did::from_peer_id(&hashed).is_err());
    }

    proptest! {
        #[test]
        fn did_peer_id_round_trip(seed in any::<[u8; 32]>()) {
            let pair = Keypair::from_secret(&SecretKey::from_bytes(seed));
            let did = Did::from_public_key(pair.public());
            let peer = did.peer_id();
            prop_assert_eq!(Did::from_peer_id(&peer).expect("back"), did);
            let text = peer.to_string();
            prop_assert!(text.starts_with("12D3KooW"));
        }
    }
}
