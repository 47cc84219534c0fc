//! The raw-stream attacker: opens libp2p streams to a node on every protocol it speaks (and one it
//! does not) and writes mutated or random bytes, or valid messages, below every typed API: the
//! framed JSON protocols (`/mycel/infer-stream/1.0.0`, `/mycel/shard/1.0.0`), the CBOR
//! request-response protocols (inference, ledger sync, audit, membership), and libp2p's own
//! gossipsub, Kademlia, identify and ping. [`stall`] opens streams and then sends nothing, half a
//! frame or a 4 GiB length prefix, and watches whether the node closes them on its own.

use std::time::{Duration, Instant};

use libp2p::futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::request_response::Codec as _;
use libp2p::request_response::cbor::codec::Codec;
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, OpenStreamError};
use mycel_node::audit::{AUDIT_PROTOCOL, AuditRequest, AuditResponse};
use mycel_node::infer_stream::StreamFrame;
use mycel_node::ledger::wire::{SYNC_PROTOCOL, SyncRequest, SyncResponse};
use mycel_node::membership::MEMBERSHIP_PROTOCOL;
use mycel_node::shard::{SHARD_PROTOCOL, ServerMsg, ShardErrorCode};
use mycel_node::wire::{
    INFER_PROTOCOL, INFER_STREAM_PROTOCOL, InferErrorCode, InferResponse, KAD_PROTOCOL,
    MAX_INFER_RESPONSE_BYTES,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::mutate::{self, Mutated};
use super::seeds::{self, SeedContext};
use super::tally::{Outcome, Tally};
use crate::rng::SimRng;

/// How long opening a stream may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the attacker waits for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long it listens on a one-way protocol before calling the message delivered.
const ONE_WAY_WAIT: Duration = Duration::from_millis(300);
/// Most reply bytes read.
const MAX_REPLY_BYTES: usize = 64 * 1024;
/// Gossipsub gives up on a connection after 5 inbound streams (the peer's own included): the
/// attacker reconnects after this many raw ones.
pub const MESHSUB_STREAMS_PER_CONNECTION: u32 = 3;

/// Gossipsub's protocol id as the nodes speak it.
pub const MESHSUB_PROTOCOL: &str = "/meshsub/1.1.0";
/// libp2p identify (the node answers with its own record).
pub const IDENTIFY_PROTOCOL: &str = "/ipfs/id/1.0.0";
/// libp2p identify push (the node reads a record).
pub const IDENTIFY_PUSH_PROTOCOL: &str = "/ipfs/id/push/1.0.0";
/// libp2p ping (32 bytes echoed).
pub const PING_PROTOCOL: &str = "/ipfs/ping/1.0.0";

/// A protocol attacked on raw streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Raw {
    /// Streamed inference: length-prefixed JSON frames.
    InferStream,
    /// Pipeline sessions: framed JSON metadata and binary blobs.
    Shard,
    /// Request-response inference (CBOR).
    Infer,
    /// Ledger sync (CBOR).
    Sync,
    /// Audit requests (CBOR).
    Audit,
    /// Consortium membership handshake (only spoken in consortium mode).
    Membership,
    /// Gossipsub RPCs (protobuf).
    Gossipsub,
    /// Kademlia (protobuf).
    Kad,
    /// Identify push (protobuf).
    IdentifyPush,
    /// Identify (the node writes, the attacker reads).
    Identify,
    /// Ping.
    Ping,
}

impl Raw {
    /// Every protocol, in a fixed order.
    pub const ALL: [Raw; 11] = [
        Raw::InferStream,
        Raw::Shard,
        Raw::Infer,
        Raw::Sync,
        Raw::Audit,
        Raw::Membership,
        Raw::Gossipsub,
        Raw::Kad,
        Raw::IdentifyPush,
        Raw::Identify,
        Raw::Ping,
    ];

    /// Protocols a stall is tried on: those whose server reads a request first.
    pub const STALLABLE: [Raw; 6] = [
        Raw::InferStream,
        Raw::Shard,
        Raw::Infer,
        Raw::Sync,
        Raw::Audit,
        Raw::Kad,
    ];

    /// The protocol id.
    pub fn id(self) -> &'static str {
        match self {
            Raw::InferStream => INFER_STREAM_PROTOCOL,
            Raw::Shard => SHARD_PROTOCOL,
            Raw::Infer => INFER_PROTOCOL,
            Raw::Sync => SYNC_PROTOCOL,
            Raw::Audit => AUDIT_PROTOCOL,
            Raw::Membership => MEMBERSHIP_PROTOCOL,
            Raw::Gossipsub => MESHSUB_PROTOCOL,
            Raw::Kad => KAD_PROTOCOL,
            Raw::IdentifyPush => IDENTIFY_PUSH_PROTOCOL,
            Raw::Identify => IDENTIFY_PROTOCOL,
            Raw::Ping => PING_PROTOCOL,
        }
    }
}

/// A node under attack.
#[derive(Clone, Debug)]
pub struct Target {
    /// Name in the report (`node 0`, `shard node`).
    pub label: String,
    /// Its PeerId.
    pub peer: PeerId,
    /// Its listen address with `/p2p/<PeerId>` (to redial it).
    pub addr: libp2p::Multiaddr,
    /// Its HTTP API.
    pub http: std::net::SocketAddr,
    /// The layer range of `tiny` it serves to pipelines, if any.
    pub shard: Option<(u32, u32)>,
}

/// Everything one raw attack needs.
pub struct RawAttack<'a> {
    /// The seeded choices.
    pub rng: &'a mut SimRng,
    /// Where streams are opened.
    pub control: &'a mut Control,
    /// The attacker's PeerId bytes (for the `from` of gossipsub messages and Kademlia records).
    pub me: Vec<u8>,
    /// Seeds.
    pub ctx: &'a SeedContext,
    /// Where outcomes go.
    pub tally: &'a Tally,
}

/// How a message is derived from its seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Valid,
    Structural,
    Bytes,
    Random,
}

fn shape(rng: &mut SimRng) -> Shape {
    match rng.below(20) {
        0..=2 => Shape::Valid,
        3..=11 => Shape::Structural,
        12..=17 => Shape::Bytes,
        _ => Shape::Random,
    }
}

/// The JSON of `valid` shaped as `s`: (bytes, mutation name).
fn shaped_json(rng: &mut SimRng, s: Shape, valid: &Value) -> (Vec<u8>, &'static str) {
    match s {
        Shape::Valid => (valid.to_string().into_bytes(), "valid"),
        Shape::Structural => {
            let (m, name) = mutate::json(rng, valid);
            (m.into_bytes(), name)
        }
        Shape::Bytes => mutate::bytes(rng, valid.to_string().as_bytes()),
        Shape::Random => (mutate::random_bytes(rng, 4096), "random"),
    }
}

/// A typed value shaped as `s`, for protocols whose requests are typed (CBOR): a structural
/// mutation goes through JSON and back into the type when it still fits (values the type allows
/// but the node must refuse); otherwise the valid value.
pub fn shaped_typed<T: Serialize + DeserializeOwned + Clone>(
    rng: &mut SimRng,
    valid: &T,
) -> (T, &'static str) {
    let Ok(v) = serde_json::to_value(valid) else {
        return (valid.clone(), "valid");
    };
    for _ in 0..8 {
        if let (Mutated::Value(m), name) = mutate::json(rng, &v)
            && let Ok(t) = serde_json::from_value::<T>(m)
        {
            return (t, name);
        }
    }
    (valid.clone(), "valid")
}

/// CBOR of a request, as the request-response codec writes it.
async fn cbor<Req: Serialize + DeserializeOwned + Send>(req: Req) -> Vec<u8> {
    let mut out = Vec::new();
    let mut codec = Codec::<Req, Value>::default();
    let protocol = StreamProtocol::new(INFER_PROTOCOL);
    let _ = codec.write_request(&protocol, &mut out, req).await;
    out
}

/// A CBOR request of `valid`, shaped as `s`.
async fn shaped_cbor<T: Serialize + DeserializeOwned + Clone + Send>(
    rng: &mut SimRng,
    s: Shape,
    valid: &T,
) -> (Vec<u8>, &'static str) {
    match s {
        Shape::Valid => (cbor(valid.clone()).await, "valid"),
        Shape::Structural => {
            let (t, name) = shaped_typed(rng, valid);
            (cbor(t).await, name)
        }
        Shape::Bytes => {
            let valid = cbor(valid.clone()).await;
            mutate::bytes(rng, &valid)
        }
        Shape::Random => (mutate::random_bytes(rng, 4096), "random"),
    }
}

async fn open(control: &mut Control, peer: PeerId, proto: &'static str) -> Result<Stream, Outcome> {
    match tokio::time::timeout(
        OPEN_TIMEOUT,
        control.open_stream(peer, StreamProtocol::new(proto)),
    )
    .await
    {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(OpenStreamError::UnsupportedProtocol(_))) => Err(Outcome::Unsupported),
        Ok(Err(_)) => Err(Outcome::Failed),
        Err(_) => Err(Outcome::Timeout),
    }
}

/// Reads until EOF, `max` bytes or `wait`; `(bytes, eof)`.
async fn read_some(stream: &mut Stream, max: usize, wait: Duration) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (buf, true),
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() >= max {
                    return (buf, false);
                }
            }
            Err(_) => return (buf, false),
        }
    }
}

/// Writes `frames` one by one (a failed write means the node closed the stream).
async fn write_all(stream: &mut Stream, frames: &[Vec<u8>]) -> bool {
    for f in frames {
        if stream.write_all(f).await.is_err() || stream.flush().await.is_err() {
            return false;
        }
    }
    true
}

/// One attack with a message on `proto` to `target`; records it and returns the outcome.
pub async fn attack(a: &mut RawAttack<'_>, target: &Target, proto: Raw) -> Outcome {
    let s = shape(a.rng);
    let (frames, mutation, half_close) = build(a, target, proto, s).await;
    let outcome = match open(a.control, target.peer, proto.id()).await {
        Err(o) => o,
        Ok(mut stream) => {
            let o = if !write_all(&mut stream, &frames).await {
                Outcome::Closed
            } else {
                if half_close {
                    let _ = stream.close().await;
                }
                judge(proto, &mut stream, frames.len()).await
            };
            // Dropping a stream resets it: the node cancels whatever it started for it.
            drop(stream);
            o
        }
    };
    a.tally.record("p2p", proto.id(), mutation, outcome);
    outcome
}

/// The frames of one attack, the mutation's name, and whether the write side is closed after
/// them (request-response servers read a request to its end).
async fn build(
    a: &mut RawAttack<'_>,
    target: &Target,
    proto: Raw,
    s: Shape,
) -> (Vec<Vec<u8>>, &'static str, bool) {
    let rng = &mut *a.rng;
    match proto {
        Raw::InferStream => {
            let job = serde_json::to_value(seeds::chat_job(rng)).unwrap_or(Value::Null);
            let (json, name) = shaped_json(rng, s, &job);
            let frame = match s {
                // Bytes and random shapes also hit the length prefix.
                Shape::Bytes | Shape::Random if rng.below(2) == 0 => {
                    mutate::bytes(rng, &seeds::stream_frame(&json)).0
                }
                _ => seeds::stream_frame(&json),
            };
            (vec![frame], name, false)
        }
        Raw::Shard => {
            let (from, to) = target.shard.unwrap_or((0, a.ctx.split.min(a.ctx.n_layers)));
            let session = seeds::shard_session(rng, a.ctx, from, to);
            let victim = rng.below(session.len());
            let mut name = "valid";
            let mut frames = Vec::with_capacity(session.len());
            for (i, (meta, blob)) in session.iter().enumerate() {
                if i != victim || s == Shape::Valid {
                    frames.push(seeds::shard_frame(meta.to_string().as_bytes(), blob));
                    continue;
                }
                let frame = match s {
                    Shape::Structural => {
                        let (m, n) = shaped_json(rng, s, meta);
                        name = n;
                        seeds::shard_frame(&m, blob)
                    }
                    Shape::Bytes if !blob.is_empty() && rng.below(2) == 0 => {
                        // The hidden states themselves: NaNs, wrong width, cut short.
                        let (b, n) = mutate::bytes(rng, blob);
                        name = n;
                        seeds::shard_frame(meta.to_string().as_bytes(), &b)
                    }
                    Shape::Bytes => {
                        let valid = seeds::shard_frame(meta.to_string().as_bytes(), blob);
                        let (b, n) = mutate::bytes(rng, &valid);
                        name = n;
                        b
                    }
                    _ => {
                        name = "random";
                        mutate::random_bytes(rng, 4096)
                    }
                };
                frames.push(frame);
            }
            if s == Shape::Structural && rng.below(4) == 0 {
                // Out of order: a step before the open.
                let last = frames.len() - 1;
                frames.swap(0, last);
                name = "reorder";
            }
            (frames, name, false)
        }
        Raw::Infer => {
            let job = seeds::chat_job(rng);
            let (b, name) = shaped_cbor(rng, s, &job).await;
            (vec![b], name, true)
        }
        Raw::Sync => {
            let req = seeds::sync_request(rng, a.ctx);
            let (b, name) = shaped_cbor::<SyncRequest>(rng, s, &req).await;
            (vec![b], name, true)
        }
        Raw::Audit => {
            let req = seeds::audit_request(rng);
            let (b, name) = shaped_cbor::<AuditRequest>(rng, s, &req).await;
            (vec![b], name, true)
        }
        Raw::Membership => {
            let job = seeds::chat_job(rng);
            let (b, name) = shaped_cbor(rng, s, &job).await;
            (vec![b], name, true)
        }
        Raw::Gossipsub => {
            let data = mutate::random_bytes(rng, 512);
            let valid = seeds::gossipsub_rpc(rng, &a.me, &data);
            let (b, name) = protobuf_shaped(rng, s, valid);
            (vec![b], name, false)
        }
        Raw::Kad => {
            let valid = seeds::kad_request(rng, &a.me);
            let (b, name) = protobuf_shaped(rng, s, valid);
            (vec![b], name, false)
        }
        Raw::IdentifyPush => {
            let valid = seeds::identify_push(rng);
            let (b, name) = protobuf_shaped(rng, s, valid);
            (vec![b], name, true)
        }
        Raw::Identify => match s {
            Shape::Valid => (Vec::new(), "valid", false),
            _ => (vec![mutate::random_bytes(rng, 256)], "random", false),
        },
        Raw::Ping => {
            let payload: Vec<u8> = (0..32).map(|_| rng.next_u64() as u8).collect();
            match s {
                Shape::Valid => (vec![payload], "valid", false),
                Shape::Random => (vec![mutate::random_bytes(rng, 4096)], "random", false),
                _ => {
                    let (b, n) = mutate::bytes(rng, &payload);
                    (vec![b], n, false)
                }
            }
        }
    }
}

fn protobuf_shaped(rng: &mut SimRng, s: Shape, valid: Vec<u8>) -> (Vec<u8>, &'static str) {
    match s {
        Shape::Valid => (valid, "valid"),
        Shape::Random => (mutate::random_bytes(rng, 4096), "random"),
        // Protobuf has no JSON form: structural mutations act on the message behind the prefix,
        // which stays right, so the decoder reads the whole damaged message.
        Shape::Structural => {
            let body = &valid[varint_prefix_len(&valid)..];
            let (b, n) = mutate::bytes(rng, body);
            (seeds::pb::framed(&b), n)
        }
        Shape::Bytes => mutate::bytes(rng, &valid),
    }
}

/// Length of a varint prefix.
fn varint_prefix_len(framed: &[u8]) -> usize {
    framed
        .iter()
        .position(|b| b & 0x80 == 0)
        .map_or(framed.len(), |i| i + 1)
}

/// How the node answered, read from the stream (`sent`: frames written, for the shard protocol's
/// one reply per frame).
async fn judge(proto: Raw, stream: &mut Stream, sent: usize) -> Outcome {
    match proto {
        Raw::InferStream => {
            let read = tokio::time::timeout(
                REPLY_TIMEOUT,
                mycel_node::infer_stream::read_frame::<_, StreamFrame>(
                    stream,
                    MAX_INFER_RESPONSE_BYTES,
                ),
            )
            .await;
            match read {
                Err(_) => Outcome::Timeout,
                Ok(Err(_)) => Outcome::Closed,
                Ok(Ok(StreamFrame::Error {
                    code: InferErrorCode::Busy,
                    ..
                })) => Outcome::Busy,
                Ok(Ok(StreamFrame::Error { .. })) => Outcome::Refused,
                Ok(Ok(_)) => Outcome::Accepted,
            }
        }
        Raw::Shard => {
            let mut last = Outcome::Closed;
            let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
            for _ in 0..sent {
                let read = tokio::time::timeout_at(
                    deadline,
                    mycel_node::shard::read_msg::<_, ServerMsg>(stream),
                )
                .await;
                match read {
                    Err(_) => {
                        return if last == Outcome::Closed {
                            Outcome::Timeout
                        } else {
                            last
                        };
                    }
                    Ok(Err(_)) => return last,
                    Ok(Ok((ServerMsg::Error { code, .. }, _))) => {
                        return if code == ShardErrorCode::Busy {
                            Outcome::Busy
                        } else {
                            Outcome::Refused
                        };
                    }
                    Ok(Ok((ServerMsg::Ready { .. } | ServerMsg::Output { .. }, _))) => {
                        last = Outcome::Accepted;
                    }
                }
            }
            last
        }
        Raw::Infer => {
            rr_reply::<InferResponse>(stream, |r| match r {
                InferResponse::Answer(_) => Outcome::Accepted,
                InferResponse::Error {
                    code: InferErrorCode::Busy,
                    ..
                } => Outcome::Busy,
                InferResponse::Error { .. } => Outcome::Refused,
            })
            .await
        }
        Raw::Sync => {
            rr_reply::<SyncResponse>(stream, |r| match r {
                SyncResponse::Error(m) if m == "busy" => Outcome::Busy,
                SyncResponse::Error(_) => Outcome::Refused,
                _ => Outcome::Accepted,
            })
            .await
        }
        Raw::Audit => {
            rr_reply::<AuditResponse>(stream, |r| match r {
                AuditResponse::Refused(m) if m == "busy" => Outcome::Busy,
                AuditResponse::Refused(_) => Outcome::Refused,
                AuditResponse::Verdict { .. } => Outcome::Accepted,
            })
            .await
        }
        Raw::Gossipsub | Raw::IdentifyPush => {
            let (_, eof) = read_some(stream, MAX_REPLY_BYTES, ONE_WAY_WAIT).await;
            if eof {
                Outcome::Closed
            } else {
                Outcome::Delivered
            }
        }
        Raw::Membership | Raw::Kad | Raw::Identify | Raw::Ping => {
            let (bytes, _) = read_some(
                stream,
                MAX_REPLY_BYTES,
                REPLY_TIMEOUT.min(Duration::from_secs(2)),
            )
            .await;
            if bytes.is_empty() {
                Outcome::Closed
            } else {
                Outcome::Accepted
            }
        }
    }
}

/// Reads a CBOR response to its end and judges it.
async fn rr_reply<R: Serialize + DeserializeOwned + Send>(
    stream: &mut Stream,
    judge: impl FnOnce(R) -> Outcome,
) -> Outcome {
    let mut codec = Codec::<Value, R>::default();
    let protocol = StreamProtocol::new(INFER_PROTOCOL);
    match tokio::time::timeout(REPLY_TIMEOUT, codec.read_response(&protocol, stream)).await {
        Err(_) => Outcome::Timeout,
        Ok(Err(_)) => Outcome::Closed,
        Ok(Ok(r)) => judge(r),
    }
}

/// How a stall starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallKind {
    /// Opens the stream and sends nothing.
    Silent,
    /// Sends the first half of a valid message.
    HalfFrame,
    /// Sends a length prefix of 4 GiB − 1 and a few bytes.
    HugeLength,
}

impl StallKind {
    /// Every kind.
    pub const ALL: [StallKind; 3] = [
        StallKind::Silent,
        StallKind::HalfFrame,
        StallKind::HugeLength,
    ];

    fn name(self) -> &'static str {
        match self {
            StallKind::Silent => "stall_silent",
            StallKind::HalfFrame => "stall_half_frame",
            StallKind::HugeLength => "stall_4gib_length",
        }
    }
}

/// Opens a stream, starts it as `kind` says, then holds it for `hold` without another byte;
/// records [`Outcome::Closed`] when the node closed it first (its timeout worked),
/// [`Outcome::Refused`] when it answered (an error frame), [`Outcome::Timeout`] when the hold ran
/// out. Returns the outcome and how long the stream stayed open.
pub async fn stall(
    a: &mut RawAttack<'_>,
    target: &Target,
    proto: Raw,
    kind: StallKind,
    hold: Duration,
) -> (Outcome, Duration) {
    let started = Instant::now();
    let first = match kind {
        StallKind::Silent => Vec::new(),
        StallKind::HugeLength => {
            let mut b = u32::MAX.to_be_bytes().to_vec();
            b.extend_from_slice(b"{\"model\":");
            b
        }
        StallKind::HalfFrame => {
            let (mut frames, _, _) = build(a, target, proto, Shape::Valid).await;
            let mut f = frames.drain(..).next().unwrap_or_default();
            f.truncate(f.len() / 2);
            f
        }
    };
    let outcome = match open(a.control, target.peer, proto.id()).await {
        Err(o) => o,
        Ok(mut stream) => {
            if !write_all(&mut stream, &[first]).await {
                Outcome::Closed
            } else {
                let mut byte = [0u8; 1];
                match tokio::time::timeout(hold, stream.read(&mut byte)).await {
                    Err(_) => Outcome::Timeout,
                    Ok(Ok(0)) | Ok(Err(_)) => Outcome::Closed,
                    Ok(Ok(_)) => Outcome::Refused,
                }
            }
        }
    };
    a.tally.record("stall", proto.id(), kind.name(), outcome);
    (outcome, started.elapsed())
}
