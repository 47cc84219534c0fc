//! Serving layer ranges to peers on `/mycel/shard/1.0.0` (specs/models.md, "Sharded serving").
//!
//! One stream is one pipeline session. The client opens it with [`ClientMsg::Open`] naming the
//! model and the exact range this node serves, then sends [`ClientMsg::Step`]s: token ids for the
//! first range, the previous range's hidden states for the others. Each step runs the range on the
//! session's KV cache and answers [`ServerMsg::Output`]: the next hidden states (or the last
//! position's logits, for a range ending at the last layer) and a signed [`SpanCommitment`] to
//! them. Closing the stream ends the session and frees its cache.
//!
//! Every message is a frame: a 4-byte big-endian length, a 4-byte big-endian length of the JSON
//! metadata, the metadata, then a binary blob (hidden states in the `MYHS` encoding of
//! [`mycel_models::hidden`], or little-endian f32 logits).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::IncomingStreams;
use mycel_identity::{Keypair, PublicKey, Signature, domains};
use mycel_models::llama::PREFILL_CHUNK;
use mycel_models::{
    ChatModel, HiddenStates, SKETCH_DIM, Session, StageInput, StageOutput, WireDType,
    hidden_to_wire,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::chat::ModelHost;

/// The protocol id.
pub const SHARD_PROTOCOL: &str = "/mycel/shard/1.0.0";
/// Largest frame: a prefill chunk of [`PREFILL_CHUNK`] tokens of an 8192-wide model in f32, plus
/// metadata.
pub const MAX_SHARD_FRAME_BYTES: u32 = 8 * 1024 * 1024 + 64 * 1024;
/// Largest JSON metadata of a frame.
pub const MAX_SHARD_META_BYTES: u32 = 16 * 1024;
/// Pipeline sessions served at once; more are refused `busy`.
pub const MAX_SHARD_SESSIONS: usize = 32;
/// A session whose client sends nothing for this long is closed.
pub const SHARD_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Client → server messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Starts the session (first frame).
    Open {
        /// Model id.
        model: String,
        /// First layer; must be the start of the range this node serves.
        from: u32,
        /// Last layer (exclusive); must be the end of the range this node serves.
        to: u32,
        /// Session id chosen by the client (hex of 16 bytes), repeated in every commitment.
        session: String,
    },
    /// Runs the range on the next chunk: `tokens` for a range starting at layer 0, else the blob
    /// holds hidden states whose `position` equals `position`.
    Step {
        /// Session position of the chunk's first token (= tokens already in the session).
        position: u32,
        /// Token ids (first range only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tokens: Option<Vec<u32>>,
    },
}

/// Server → client messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The session is open.
    Ready {
        /// Layers of the whole model.
        n_layers: u32,
        /// Width of the hidden states.
        hidden_dim: u32,
    },
    /// A step's result; the blob holds the output whose blake3 the commitment names.
    Output {
        /// The JSON of a [`SpanCommitment`].
        commitment: String,
        /// Hex Ed25519 signature over `commitment` in the `mycel/v1/shard-span` domain.
        signature: String,
    },
    /// Refused or failed; the server closes the stream.
    Error {
        /// Why.
        code: ShardErrorCode,
        /// Detail.
        message: String,
    },
}

/// Failure kinds of [`ServerMsg::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardErrorCode {
    /// Too many sessions.
    Busy,
    /// This node does not serve that model and range (any more).
    NotServed,
    /// A malformed or out-of-order message.
    InvalidRequest,
    /// The model failed (context full, …).
    Failed,
}

/// What a shard server signs for every step (specs/models.md, "Verified spans"): it ran layers
/// `[from, to)` of `model` on the input whose blake3 is `input` and returned the output whose
/// blake3 is `output`; `sketch` fingerprints that output so a re-execution can be checked within
/// [`mycel_models::hidden::SKETCH_TOLERANCE`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpanCommitment {
    /// The client's session id (hex).
    pub session: String,
    /// The server's PeerId (base58).
    pub server: String,
    /// Model id.
    pub model: String,
    /// First layer.
    pub from: u32,
    /// Last layer (exclusive).
    pub to: u32,
    /// Position of the chunk's first token.
    pub position: u32,
    /// Tokens in the chunk.
    pub seq_len: u32,
    /// Hex blake3 of the input: the token ids as u32 LE, or the hidden-state blob.
    pub input: String,
    /// Hex blake3 of the output blob.
    pub output: String,
    /// [`HiddenStates::sketch`] of the output (for logits: of the logits as one row).
    pub sketch: [f32; SKETCH_DIM],
}

impl SpanCommitment {
    /// Signs: the JSON body and the hex signature over it.
    pub fn sign(&self, key: &Keypair) -> (String, String) {
        let body = serde_json::to_string(self).unwrap_or_default();
        let signature = key.sign(domains::SHARD_SPAN, body.as_bytes()).to_hex();
        (body, signature)
    }

    /// Parses and checks a commitment signed by `server`.
    pub fn verify(body: &str, signature: &str, server: &PeerId) -> Result<Self, String> {
        let c: SpanCommitment =
            serde_json::from_str(body).map_err(|e| format!("bad commitment: {e}"))?;
        if c.server != server.to_base58() {
            return Err("commitment names another server".into());
        }
        let key = PublicKey::from_peer_id(server).map_err(|e| e.to_string())?;
        let sig = Signature::from_hex(signature).map_err(|e| e.to_string())?;
        key.verify(domains::SHARD_SPAN, body.as_bytes(), &sig)
            .map_err(|e| format!("commitment signature: {e}"))?;
        Ok(c)
    }
}

/// blake3 of token ids as u32 LE: the `input` of a first-range commitment.
pub fn tokens_digest(ids: &[u32]) -> String {
    let mut h = blake3::Hasher::new();
    for id in ids {
        h.update(&id.to_le_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The stream protocol id.
pub fn protocol() -> StreamProtocol {
    StreamProtocol::new(SHARD_PROTOCOL)
}

/// Writes one frame: metadata JSON and a blob.
pub async fn write_msg<W, T>(w: &mut W, meta: &T, blob: &[u8]) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let meta = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    let total = u32::try_from(4 + meta.len() + blob.len()).map_err(std::io::Error::other)?;
    // One write per frame: each write on a muxed stream may become its own transport frame.
    let mut frame = Vec::with_capacity(8 + meta.len() + blob.len());
    frame.extend_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    frame.extend_from_slice(&meta);
    frame.extend_from_slice(blob);
    w.write_all(&frame).await?;
    w.flush().await
}

/// Reads one frame, checking both lengths before allocating.
pub async fn read_msg<R, T>(r: &mut R) -> std::io::Result<(T, Vec<u8>)>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let total = u32::from_be_bytes(len);
    if !(4..=MAX_SHARD_FRAME_BYTES).contains(&total) {
        return Err(invalid(format!("frame of {total} bytes is out of bounds")));
    }
    r.read_exact(&mut len).await?;
    let meta_len = u32::from_be_bytes(len);
    if meta_len > MAX_SHARD_META_BYTES || meta_len > total - 4 {
        return Err(invalid(format!(
            "metadata of {meta_len} bytes is out of bounds"
        )));
    }
    let mut meta = vec![0u8; meta_len as usize];
    r.read_exact(&mut meta).await?;
    let mut blob = vec![0u8; (total - 4 - meta_len) as usize];
    r.read_exact(&mut blob).await?;
    let meta = serde_json::from_slice(&meta).map_err(|e| invalid(e.to_string()))?;
    Ok((meta, blob))
}

/// Accepts pipeline sessions until `incoming` ends. Streams from peers not `admitted` (consortium
/// mode) are dropped unread.
pub async fn serve(
    mut incoming: IncomingStreams,
    host: Arc<ModelHost>,
    key: Keypair,
    admitted: crate::membership::Admitted,
) {
    let slots = Arc::new(Semaphore::new(MAX_SHARD_SESSIONS));
    while let Some((peer, mut stream)) = incoming.next().await {
        let slot = slots.clone().try_acquire_owned();
        let (host, key, admitted) = (host.clone(), key.clone(), admitted.clone());
        tokio::spawn(async move {
            let Ok(_slot) = slot else {
                let _ = refuse(&mut stream, ShardErrorCode::Busy, "too many sessions").await;
                return;
            };
            if !admitted
                .wait_for(&peer, crate::wire::STREAM_REQUEST_READ_TIMEOUT)
                .await
            {
                tracing::debug!(%peer, "dropped a shard stream from a peer that is not a member");
                return;
            }
            if let Err(e) = serve_session(peer, &mut stream, &host, &key).await {
                tracing::debug!(%peer, error = %e, "shard session ended");
            }
            let _ = stream.close().await;
        });
    }
}

async fn refuse(stream: &mut Stream, code: ShardErrorCode, message: &str) -> std::io::Result<()> {
    let msg = ServerMsg::Error {
        code,
        message: message.into(),
    };
    write_msg(stream, &msg, &[]).await
}

/// One session: `Open`, then steps until the client closes, idles out or errs.
async fn serve_session(
    peer: PeerId,
    stream: &mut Stream,
    host: &ModelHost,
    key: &Keypair,
) -> std::io::Result<()> {
    let (open, _) = tokio::time::timeout(
        crate::wire::STREAM_REQUEST_READ_TIMEOUT,
        read_msg::<_, ClientMsg>(stream),
    )
    .await
    .map_err(|_| std::io::Error::other("no open message in time"))??;
    let ClientMsg::Open {
        model: id,
        from,
        to,
        session: session_id,
    } = open
    else {
        return refuse(stream, ShardErrorCode::InvalidRequest, "expected open").await;
    };
    let Some(model) = host.shard(&id).filter(|m| {
        let r = m.layer_range();
        (r.start(), r.end()) == (from, to)
    }) else {
        let msg = format!("this node does not serve layers [{from}, {to}) of `{id}`");
        return refuse(stream, ShardErrorCode::NotServed, &msg).await;
    };
    if session_id.len() != 32 || hex::decode(&session_id).is_err() {
        return refuse(stream, ShardErrorCode::InvalidRequest, "bad session id").await;
    }
    let cfg = model.config();
    let ready = ServerMsg::Ready {
        n_layers: cfg.n_layer,
        hidden_dim: u32::try_from(cfg.n_embd).unwrap_or(u32::MAX),
    };
    write_msg(stream, &ready, &[]).await?;
    let _counted = host.shard_session();
    tracing::debug!(%peer, model = %id, from, to, "pipeline session opened");
    let mut session = Some(model.new_session());
    let server = key.peer_id().to_base58();
    loop {
        let msg = match tokio::time::timeout(SHARD_IDLE_TIMEOUT, read_msg::<_, ClientMsg>(stream))
            .await
        {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        let (ClientMsg::Step { position, tokens }, blob) = msg else {
            return refuse(stream, ShardErrorCode::InvalidRequest, "expected step").await;
        };
        let mut s = session.take().unwrap_or_else(|| model.new_session());
        let checked = check_step(&model, &s, position, tokens, &blob);
        let (input, input_digest, seq_len) = match checked {
            Ok(v) => v,
            Err(m) => return refuse(stream, ShardErrorCode::InvalidRequest, &m).await,
        };
        let started = Instant::now();
        let m = model.clone();
        let (s, out) = tokio::task::spawn_blocking(move || {
            let input = match &input {
                StepInput::Tokens(ids) => StageInput::Tokens(ids),
                StepInput::Hidden(h) => match h.to_tensor() {
                    Ok(t) => StageInput::Hidden(t),
                    Err(e) => return (s, Err(e)),
                },
            };
            let out = m.forward_stage(&mut s, input);
            (s, out)
        })
        .await
        .map_err(std::io::Error::other)?;
        session = Some(s);
        host.record_shard_time(&id, to - from, seq_len as usize, started.elapsed());
        let delay = host.step_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let forge = host.forging();
        let (out_blob, sketch) = match out.and_then(|o| output_blob(o, position, forge)) {
            Ok(v) => v,
            Err(e) => return refuse(stream, ShardErrorCode::Failed, &e.to_string()).await,
        };
        let commitment = SpanCommitment {
            session: session_id.clone(),
            server: server.clone(),
            model: id.clone(),
            from,
            to,
            position,
            seq_len,
            input: input_digest,
            output: blake3::hash(&out_blob).to_hex().to_string(),
            sketch,
        };
        let (commitment, signature) = commitment.sign(key);
        let msg = ServerMsg::Output {
            commitment,
            signature,
        };
        write_msg(stream, &msg, &out_blob).await?;
    }
}

/// A validated step input.
enum StepInput {
    Tokens(Vec<u32>),
    Hidden(HiddenStates),
}

/// Checks a step against the session and the model; returns the input, its digest and its length.
fn check_step(
    model: &ChatModel,
    session: &Session,
    position: u32,
    tokens: Option<Vec<u32>>,
    blob: &[u8],
) -> Result<(StepInput, String, u32), String> {
    if position as usize != session.len() {
        return Err(format!(
            "step at position {position}, the session holds {}",
            session.len()
        ));
    }
    let first = model.layer_range().start() == 0;
    let cfg = model.config();
    match tokens {
        Some(ids) if first => {
            if ids.is_empty() || ids.len() > PREFILL_CHUNK {
                return Err(format!("a step carries 1..={PREFILL_CHUNK} tokens"));
            }
            if ids.iter().any(|&t| t as usize >= cfg.vocab_size) {
                return Err("token id outside the vocabulary".into());
            }
            let digest = tokens_digest(&ids);
            let n = ids.len() as u32;
            Ok((StepInput::Tokens(ids), digest, n))
        }
        None if !first => {
            let h = HiddenStates::decode(blob).map_err(|e| e.to_string())?;
            if h.hidden_dim as usize != cfg.n_embd
                || h.position != position
                || h.seq_len as usize > PREFILL_CHUNK
                || !h.data.iter().all(|v| v.is_finite())
            {
                return Err("hidden states do not fit this session".into());
            }
            let (digest, n) = (blake3::hash(blob).to_hex().to_string(), h.seq_len);
            Ok((StepInput::Hidden(h), digest, n))
        }
        Some(_) => Err("this range takes hidden states, not tokens".into()),
        None => Err("the first range takes token ids".into()),
    }
}

/// The wire blob of a step's output and its sketch.
/// `forge` (a cheating server, for tests): the hidden states are skewed by 5 %.
fn output_blob(
    out: StageOutput,
    position: u32,
    forge: bool,
) -> mycel_models::Result<(Vec<u8>, [f32; SKETCH_DIM])> {
    match out {
        StageOutput::Hidden(t) => {
            let mut h = hidden_to_wire(&t, position as usize)?;
            if forge {
                h.data.iter_mut().step_by(2).for_each(|v| *v *= 1.05);
            }
            Ok((h.encode(WireDType::F32), h.sketch()))
        }
        StageOutput::Logits(t) => {
            let logits = t.to_vec1::<f32>()?;
            let blob = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok((blob, logits_sketch(logits)))
        }
    }
}

/// Sketch of a logits vector (one row of width vocab).
pub fn logits_sketch(logits: Vec<f32>) -> [f32; SKETCH_DIM] {
    HiddenStates {
        position: 0,
        seq_len: 1,
        hidden_dim: u32::try_from(logits.len()).unwrap_or(u32::MAX),
        data: logits,
    }
    .sketch()
}

/// Keeps an automatic range where the swarm needs it (specs/models.md, "Rebalancing"): once per
/// `every`, builds the live view of `model`'s placements from heartbeats, publishes the per-layer
/// coverage as metrics, and when [`crate::rebalance::Rebalancer`] says so loads the new window and
/// serves it instead. Ends when the node's network stops.
pub async fn rebalance(
    node: crate::Node,
    model: String,
    n_layers: u32,
    params: crate::rebalance::RebalanceParams,
    every: Duration,
) {
    use crate::rebalance::{Placement, Rebalancer, coverage};
    let me = node.peer_id();
    let mut rebalancer = Rebalancer::new(params);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(current) = node.shard(&model) else {
            return;
        };
        let Ok(peers) = node.network().peers().await else {
            return;
        };
        let mut view: Vec<Placement> = crate::pipeline::offers_from(&peers, &model)
            .into_iter()
            .map(|o| Placement {
                peer: o.peer,
                from: o.from,
                to: o.to,
            })
            .collect();
        view.push(Placement {
            peer: me,
            from: current.0,
            to: current.1,
        });
        node.metrics()
            .set_coverage(&model, &coverage(&view, n_layers));
        let Some(to) = rebalancer.decide(me, current, &view) else {
            continue;
        };
        tracing::info!(%model, from = ?current, to = ?to, "rebalancing: moving to a less covered layer range");
        let (id, dir) = (model.clone(), node.models_dir());
        let loaded =
            tokio::task::spawn_blocking(move || crate::models::load_range(&id, to.0, to.1, &dir))
                .await;
        match loaded {
            Ok(Ok(shard)) => {
                if let Err(e) = node.serve_shard(&model, Arc::new(shard)).await {
                    tracing::warn!(error = %e, "cannot announce the new layer range");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot load the new layer range"),
            Err(e) => tracing::warn!(error = %e, "loading task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bounds_hold() {
        let mut buf = Vec::new();
        let msg = ClientMsg::Step {
            position: 7,
            tokens: Some(vec![1, 2]),
        };
        write_msg(&mut buf, &msg, b"blob").await.expect("write");
        let (back, blob): (ClientMsg, _) = read_msg(&mut buf.as_slice()).await.expect("read");
        assert_eq!((back, blob.as_slice()), (msg, &b"blob"[..]));
        let mut huge = (MAX_SHARD_FRAME_BYTES + 1).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 8]);
        assert!(
            read_msg::<_, ClientMsg>(&mut huge.as_slice())
                .await
                .is_err()
        );
        let mut bad_meta = 8u32.to_be_bytes().to_vec();
        bad_meta.extend_from_slice(&100u32.to_be_bytes());
        bad_meta.extend_from_slice(&[0; 4]);
        assert!(
            read_msg::<_, ClientMsg>(&mut bad_meta.as_slice())
                .await
                .is_err()
        );
    }

    #[test]
    fn commitments_verify_only_untampered_from_their_server() {
        let key = Keypair::generate();
        let c = SpanCommitment {
            session: "00".repeat(16),
            server: key.peer_id().to_base58(),
            model: "tiny".into(),
            from: 2,
            to: 4,
            position: 0,
            seq_len: 3,
            input: tokens_digest(&[1, 2, 3]),
            output: blake3::hash(b"out").to_hex().to_string(),
            sketch: [0.5; SKETCH_DIM],
        };
        let (body, sig) = c.sign(&key);
        assert_eq!(SpanCommitment::verify(&body, &sig, &key.peer_id()), Ok(c));
        let other = Keypair::generate().peer_id();
        assert!(SpanCommitment::verify(&body, &sig, &other).is_err());
        let forged = body.replace("\"to\":4", "\"to\":5");
        assert!(SpanCommitment::verify(&forged, &sig, &key.peer_id()).is_err());
    }
}
