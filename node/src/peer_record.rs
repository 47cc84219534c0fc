//! Signed DID → PeerId records in the DHT (specs/wire.md, "DHT records"): a node publishes under
//! `did/<did>` where it can be reached, signed by its DID key, so anyone holding a DID finds the node's
//! current addresses. Peers store only records that verify (the key's DID matches the record, the
//! signature is the DID key's, the PeerId is that key's).

use libp2p::{Multiaddr, PeerId};
use mycel_identity::{Did, Keypair, Signature, domains};
use serde::{Deserialize, Serialize};

/// Prefix of the DHT key of a DID's record: `did/<did>`.
pub const PEER_RECORD_PREFIX: &str = "did/";
/// Largest record value accepted.
pub const MAX_PEER_RECORD_BYTES: usize = 4096;
/// Most addresses a record lists.
pub const MAX_RECORD_ADDRS: usize = 8;

/// Where the holder of a DID can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The DID (`did:key:z6Mk…`).
    pub did: String,
    /// The PeerId of the same key (base58).
    pub peer_id: String,
    /// Listen multiaddrs, each ending in `/p2p/<peer_id>`.
    pub addrs: Vec<String>,
    /// When it was signed, Unix milliseconds (a newer record replaces an older one).
    pub issued_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Signed {
    body: String,
    signature: String,
}

/// The DHT key of `did`'s record.
pub fn record_key(did: &str) -> Vec<u8> {
    format!("{PEER_RECORD_PREFIX}{did}").into_bytes()
}

impl PeerRecord {
    /// The record of `key`'s node at `addrs` (at most [`MAX_RECORD_ADDRS`] kept).
    pub fn new(key: &Keypair, addrs: &[Multiaddr]) -> Self {
        let issued_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            did: Did::from_public_key(key.public()).to_string(),
            peer_id: key.peer_id().to_base58(),
            addrs: addrs
                .iter()
                .take(MAX_RECORD_ADDRS)
                .map(|a| a.to_string())
                .collect(),
            issued_ms,
        }
    }

    /// Signs: the bytes stored in the DHT.
    pub fn sign(&self, key: &Keypair) -> Vec<u8> {
        let body = serde_json::to_string(self).unwrap_or_default();
        let signature = key.sign(domains::PEER_RECORD, body.as_bytes()).to_hex();
        serde_json::to_vec(&Signed { body, signature }).unwrap_or_default()
    }

    /// Checks a record stored under `key` (a [`record_key`]); `Err` says why it is refused.
    pub fn verify(key: &[u8], value: &[u8]) -> Result<Self, String> {
        if value.len() > MAX_PEER_RECORD_BYTES {
            return Err("record too large".into());
        }
        let did = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(PEER_RECORD_PREFIX))
            .ok_or("not a DID record key")?;
        let signed: Signed = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        let record: PeerRecord = serde_json::from_str(&signed.body).map_err(|e| e.to_string())?;
        if record.did != did {
            return Err("record names another DID".into());
        }
        let parsed: Did = did.parse().map_err(|e| format!("bad DID: {e}"))?;
        let public = parsed.public_key();
        let sig = Signature::from_hex(&signed.signature).map_err(|e| e.to_string())?;
        public
            .verify(domains::PEER_RECORD, signed.body.as_bytes(), &sig)
            .map_err(|e| format!("bad signature: {e}"))?;
        let peer = PeerId::from_public_key(&public.to_libp2p());
        if record.peer_id != peer.to_base58() {
            return Err("record names another PeerId".into());
        }
        if record.addrs.len() > MAX_RECORD_ADDRS
            || record.addrs.iter().any(|a| a.parse::<Multiaddr>().is_err())
        {
            return Err("bad addresses".into());
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_verify_only_under_their_did_untampered() {
        let key = Keypair::generate();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", key.peer_id())
            .parse()
            .expect("addr");
        let record = PeerRecord::new(&key, &[addr]);
        let bytes = record.sign(&key);
        let k = record_key(&record.did);
        assert_eq!(PeerRecord::verify(&k, &bytes), Ok(record.clone()));
        let other = Did::from_public_key(Keypair::generate().public()).to_string();
        assert!(PeerRecord::verify(&record_key(&other), &bytes).is_err());
        let tampered = String::from_utf8(bytes.clone())
            .expect("json")
            .replace("4001", "4002");
        assert!(PeerRecord::verify(&k, tampered.as_bytes()).is_err());
        // Signed by another key for this DID.
        let mut forged = record.clone();
        forged.issued_ms += 1;
        assert!(PeerRecord::verify(&k, &forged.sign(&Keypair::generate())).is_err());
        assert!(PeerRecord::verify(&k, &vec![b' '; MAX_PEER_RECORD_BYTES + 1]).is_err());
        assert!(PeerRecord::verify(b"model/tiny", &bytes).is_err());
    }
}
