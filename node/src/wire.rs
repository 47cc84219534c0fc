//! Wire protocols between nodes: ids, message types and limits (normative text: specs/wire.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chat::{ChatAnswer, ChatJob};

/// Kademlia protocol id (a private DHT, not the public IPFS one).
pub const KAD_PROTOCOL: &str = "/mycel/kad/1.0.0";
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/mycel/id/1.0.0";
/// Request-response inference protocol: a CBOR [`ChatJob`] in, a CBOR [`InferResponse`] out.
pub const INFER_PROTOCOL: &str = "/mycel/infer/1.0.0";
/// Streamed inference: length-prefixed JSON frames on a raw stream (see [`crate::infer_stream`]).
pub const INFER_STREAM_PROTOCOL: &str = "/mycel/infer-stream/1.0.0";
/// Gossipsub topic of signed health heartbeats.
pub const HEALTH_TOPIC: &str = "mycel/health/1";
/// Prefix of the DHT provider key of a model: `model/<id>`.
pub const MODEL_KEY_PREFIX: &str = "model/";

/// Largest inference request on the wire: prompt bytes plus framing.
pub const MAX_INFER_REQUEST_BYTES: u64 = 128 * 1024;
/// Largest inference response on the wire: answer bytes plus framing.
pub const MAX_INFER_RESPONSE_BYTES: u64 = 512 * 1024;
/// Largest gossipsub message (a block is ≤ 64 KiB; heartbeats and votes are far smaller).
pub const MAX_GOSSIP_BYTES: usize = 80 * 1024;
/// Inbound inference streams open at once per connection.
pub const MAX_CONCURRENT_INFER_STREAMS: usize = 8;
/// Streamed jobs served at once per node; more are answered `busy`.
pub const MAX_INBOUND_STREAM_JOBS: usize = 32;
/// How long a server waits for the request frame of a new stream.
pub const STREAM_REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence between two frames of a streamed answer before the requester treats the provider
/// as stalled and fails over.
pub const STREAM_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a DHT provider lookup may take.
pub const PROVIDER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Prefix of the DHT provider key of a layer range: `shard/<id>/<from>-<to>`.
pub const SHARD_KEY_PREFIX: &str = "shard/";

/// DHT key under which servers of layers `[from, to)` of `model` are recorded.
pub fn shard_key(model: &str, from: u32, to: u32) -> Vec<u8> {
    format!("{SHARD_KEY_PREFIX}{model}/{from}-{to}").into_bytes()
}

/// DHT key under which providers of `model` are recorded.
pub fn model_key(model: &str) -> Vec<u8> {
    format!("{MODEL_KEY_PREFIX}{model}").into_bytes()
}

/// Inference request: the job itself (re-validated by the receiver).
pub type InferRequest = ChatJob;

/// Inference response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InferResponse {
    /// The full answer; the serving node is the peer that answered (authenticated by Noise).
    Answer(ChatAnswer),
    /// The request was refused or failed.
    Error {
        /// What kind of failure.
        code: InferErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

/// Failure kinds of [`InferResponse::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InferErrorCode {
    /// The request failed validation.
    InvalidRequest,
    /// The peer does not serve the model.
    ModelNotFound,
    /// The peer is at its concurrency limit.
    Busy,
    /// Generation failed.
    Failed,
}

/// Serde for `Vec<u8>` as one byte string (CBOR major type 2) instead of serde's default array of
/// integers: half the size on the wire, and one length check.
pub mod byte_string {
    use serde::{Deserializer, Serializer};

    /// Writes the bytes as one byte string.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Reads one byte string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(V)
    }

    /// The same for `Option<Vec<u8>>`.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        #[derive(Serialize, Deserialize)]
        struct B(#[serde(with = "super")] Vec<u8>);

        /// Writes `None` or one byte string.
        pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            v.as_ref().map(|b| B(b.clone())).serialize(s)
        }

        /// Reads `None` or one byte string.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            Ok(Option::<B>::deserialize(d)?.map(|b| b.0))
        }
    }
}
