//! Signed health heartbeats gossiped on [`crate::wire::HEALTH_TOPIC`].
//!
//! The body is JSON; the signature covers its exact bytes in the `mycel/v1/heartbeat` domain with the
//! node key, and the signer must be the gossip message's source peer.

use mycel_identity::{Keypair, PeerId, PublicKey, Signature, domains};
use serde::{Deserialize, Serialize};

/// Most model ids (and most shards) one heartbeat may list; longer lists are refused.
pub const MAX_HEARTBEAT_MODELS: usize = 32;
/// Largest layer index a shard advertisement may name.
pub const MAX_SHARD_LAYER: u32 = 4096;

/// A layer range a node serves on `/mycel/shard/1.0.0` (specs/models.md, "Sharded serving").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardAd {
    /// Model id.
    pub model: String,
    /// First layer (inclusive).
    pub from: u32,
    /// Last layer (exclusive).
    pub to: u32,
    /// Measured compute per layer per token, microseconds (0: not measured yet).
    #[serde(default)]
    pub layer_us: u32,
    /// Layers of the whole model (0: not said).
    #[serde(default)]
    pub n_layers: u32,
}

impl ShardAd {
    fn is_valid(&self) -> bool {
        self.from < self.to
            && self.to <= MAX_SHARD_LAYER
            && (self.n_layers == 0 || self.to <= self.n_layers)
            && !self.model.is_empty()
            && self.model.len() <= crate::chat::MAX_MODEL_ID_LEN
    }
}

/// A node's health record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender's PeerId (base58).
    pub peer_id: String,
    /// Models the sender serves.
    pub models: Vec<String>,
    /// Generations running or queued at the sender.
    pub load: u32,
    /// Sender's counter, increasing per heartbeat (replays of older ones are ignored).
    pub seq: u64,
    /// Layer ranges the sender serves to pipelines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardAd>,
    /// Tokens per second the sender generated since its previous heartbeat.
    #[serde(default)]
    pub tok_s: u32,
    /// Memory available on the sender's host, MiB (0: unknown).
    #[serde(default)]
    pub free_mem_mib: u64,
    /// The sender's software version.
    #[serde(default)]
    pub version: String,
}

/// Longest version string a heartbeat may carry.
pub const MAX_VERSION_LEN: usize = 32;

/// Memory available to new work on this host, MiB (Linux `MemAvailable`; 0 elsewhere).
pub fn free_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// A heartbeat and its signature, as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHeartbeat {
    /// The JSON of a [`Heartbeat`].
    pub body: String,
    /// Hex Ed25519 signature over `body` in the heartbeat domain.
    pub signature: String,
}

impl Heartbeat {
    /// Signs and encodes this heartbeat for gossip.
    pub fn sign(&self, key: &Keypair) -> Vec<u8> {
        let body = serde_json::to_string(self).unwrap_or_default();
        let signature = key.sign(domains::HEARTBEAT, body.as_bytes()).to_hex();
        serde_json::to_vec(&SignedHeartbeat { body, signature }).unwrap_or_default()
    }

    /// Decodes and verifies gossip bytes from `source`; `None` when anything is off.
    pub fn verify(bytes: &[u8], source: &PeerId) -> Option<Heartbeat> {
        let signed: SignedHeartbeat = serde_json::from_slice(bytes).ok()?;
        let hb: Heartbeat = serde_json::from_str(&signed.body).ok()?;
        if hb.peer_id != source.to_base58()
            || hb.models.len() > MAX_HEARTBEAT_MODELS
            || hb.shards.len() > MAX_HEARTBEAT_MODELS
            || hb.version.len() > MAX_VERSION_LEN
            || !hb.shards.iter().all(ShardAd::is_valid)
        {
            return None;
        }
        let key = PublicKey::from_peer_id(source).ok()?;
        let sig = Signature::from_hex(&signed.signature).ok()?;
        key.verify(domains::HEARTBEAT, signed.body.as_bytes(), &sig)
            .ok()?;
        Some(hb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_verifies_only_from_its_signer_and_untampered() {
        let key = Keypair::generate();
        let other = Keypair::generate();
        let hb = Heartbeat {
            peer_id: key.peer_id().to_base58(),
            models: vec!["tiny".into()],
            load: 0,
            seq: 3,
            shards: vec![ShardAd {
                model: "tiny".into(),
                from: 0,
                to: 3,
                layer_us: 40,
                n_layers: 6,
            }],
            tok_s: 25,
            free_mem_mib: 1024,
            version: "0.1.0".into(),
        };
        let bytes = hb.sign(&key);
        assert_eq!(Heartbeat::verify(&bytes, &key.peer_id()), Some(hb.clone()));
        assert_eq!(Heartbeat::verify(&bytes, &other.peer_id()), None);
        let tampered = String::from_utf8(bytes)
            .expect("json")
            .replace("tiny", "huge");
        assert_eq!(Heartbeat::verify(tampered.as_bytes(), &key.peer_id()), None);
        assert_eq!(Heartbeat::verify(b"\xff garbage", &key.peer_id()), None);
        let mut long_version = hb.clone();
        long_version.version = "9".repeat(MAX_VERSION_LEN + 1);
        assert_eq!(
            Heartbeat::verify(&long_version.sign(&key), &key.peer_id()),
            None
        );
        let mut empty_range = hb.clone();
        empty_range.shards[0].to = 0;
        assert_eq!(
            Heartbeat::verify(&empty_range.sign(&key), &key.peer_id()),
            None
        );
    }
}
