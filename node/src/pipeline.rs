//! Client side of sharded pipelines (specs/models.md, "Sharded serving"): a session along a route
//! of shard servers covering layers `0..L`, hidden states relayed hop by hop, failover with prefix
//! replay, and the signed span commitments of every step.
//!
//! The client keeps, per hop, the inputs it sent (token ids or the previous hop's hidden states)
//! and the sketch each server committed to. When a hop dies or stalls, [`Pipeline`] plans a
//! replacement chain for exactly that layer range ([`crate::route::plan`]), replays the stored
//! inputs through it, and checks that the replacement's outputs match the committed sketches: the
//! replacement proves it rebuilt the same state, and a mismatch exposes one of the two servers as
//! dishonest (counted in [`PipelineStats::disputed`]). The caller sees only added latency.

use std::time::Duration;

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use libp2p_stream::Control;
use mycel_models::llama::PREFILL_CHUNK;
use mycel_models::{ChatModel, HiddenStates, SKETCH_DIM, sketches_match};

use crate::error::{NodeError, Result};
use crate::network::NetworkHandle;
use crate::route::{Hop, ShardOffer, plan};
use crate::shard::{ClientMsg, ServerMsg, SpanCommitment, logits_sketch, read_msg, write_msg};

/// Longest wait for one step's answer (a prefill chunk of a 10-layer range takes well under a
/// second on the reference machine); a server slower than this is treated as stalled.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Replacement chains tried for one failed hop before the session fails.
pub const MAX_FAILOVER_ATTEMPTS: usize = 3;
/// Span commitments a session keeps (a 2048-token session over 3 hops needs fewer).
pub const MAX_KEPT_SPANS: usize = 8192;

/// What the client sent one hop, and what the server committed to for it.
#[derive(Clone, Debug)]
struct Sent {
    position: u32,
    input: Input,
    sketch: [f32; SKETCH_DIM],
}

#[derive(Clone, Debug)]
enum Input {
    Tokens(Vec<u32>),
    Hidden(Vec<u8>),
}

struct Link {
    hop: Hop,
    stream: Stream,
    history: Vec<Sent>,
}

/// Counters of a session, for job status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Hops replaced after a failure.
    pub failovers: u32,
    /// Replays whose outputs did not match the failed server's commitments.
    pub disputed: u32,
    /// Signed span commitments received and checked.
    pub spans: u32,
}

/// An open pipeline session.
pub struct Pipeline {
    net: NetworkHandle,
    control: Control,
    model: String,
    n_layers: u32,
    vocab: usize,
    session: String,
    links: Vec<Link>,
    position: u32,
    exclude: Vec<PeerId>,
    spans: Vec<SpanCommitment>,
    stats: PipelineStats,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("model", &self.model)
            .field("route", &self.route())
            .field("position", &self.position)
            .finish()
    }
}

/// The shard servers of `model` known from heartbeats, as route-planning offers.
pub async fn offers(net: &NetworkHandle, model: &str) -> Vec<ShardOffer> {
    offers_from(&net.peers().await.unwrap_or_default(), model)
}

/// The shard servers of `model` among `peers` that are up, as route-planning offers.
pub fn offers_from(peers: &[crate::network::PeerSnapshot], model: &str) -> Vec<ShardOffer> {
    peers
        .iter()
        .filter(|p| p.up)
        .flat_map(|p| {
            p.shards
                .iter()
                .filter(|s| s.model == model)
                .map(|s| ShardOffer {
                    peer: p.peer_id,
                    from: s.from,
                    to: s.to,
                    rtt_ms: p.rtt_ewma.map(|d| d.as_secs_f64() * 1000.0),
                    layer_ms: (s.layer_us > 0).then(|| f64::from(s.layer_us) / 1000.0),
                    load: p.load,
                })
        })
        .collect()
}

impl Pipeline {
    /// Plans the cheapest route over layers `0..n_layers` of `model` and opens a session on every
    /// hop.
    pub async fn open(
        net: NetworkHandle,
        model: &str,
        n_layers: u32,
        vocab: usize,
    ) -> Result<Self> {
        let mut p = Self {
            control: net.stream_control(),
            net,
            model: model.to_string(),
            n_layers,
            vocab,
            session: hex::encode(rand::random::<[u8; 16]>()),
            links: Vec::new(),
            position: 0,
            exclude: Vec::new(),
            spans: Vec::new(),
            stats: PipelineStats::default(),
        };
        for _ in 0..MAX_FAILOVER_ATTEMPTS {
            let offers = offers(&p.net, model).await;
            let Some(route) = plan(&offers, 0, n_layers, &p.exclude) else {
                break;
            };
            match p.connect(&route).await {
                Ok(links) => {
                    p.links = links;
                    return Ok(p);
                }
                Err((peer, e)) => {
                    tracing::info!(%peer, error = %e, "shard server refused a session");
                    p.exclude.push(peer);
                }
            }
        }
        Err(NodeError::UpstreamFailed {
            model: model.to_string(),
            reasons: format!("no route of shard servers covers layers 0..{n_layers}"),
        })
    }

    /// The hops in use.
    pub fn route(&self) -> Vec<Hop> {
        self.links.iter().map(|l| l.hop.clone()).collect()
    }

    /// Counters so far.
    pub fn stats(&self) -> PipelineStats {
        self.stats.clone()
    }

    /// The checked span commitments (at most [`MAX_KEPT_SPANS`]).
    pub fn spans(&self) -> &[SpanCommitment] {
        &self.spans
    }

    /// Appends `ids` to the session and returns the last position's logits, failing over when a
    /// hop breaks.
    pub async fn feed(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut logits = None;
        for chunk in ids.chunks(PREFILL_CHUNK) {
            let mut input = Input::Tokens(chunk.to_vec());
            let mut i = 0;
            while i < self.links.len() {
                match self.exchange(i, &input).await {
                    Ok((blob, commitment)) => {
                        self.links[i].history.push(Sent {
                            position: self.position,
                            input,
                            sketch: commitment.sketch,
                        });
                        self.keep(commitment);
                        input = Input::Hidden(blob);
                        i += 1;
                    }
                    Err(e) => {
                        tracing::info!(hop = ?self.links[i].hop, error = %e, "pipeline hop failed");
                        self.failover(i).await?;
                    }
                }
            }
            self.position += chunk.len() as u32;
            logits = Some(input);
        }
        match logits {
            Some(Input::Hidden(blob)) => Ok(blob
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()),
            _ => Err(NodeError::InvalidRequest("nothing to feed".into())),
        }
    }

    fn keep(&mut self, c: SpanCommitment) {
        self.stats.spans += 1;
        if self.spans.len() < MAX_KEPT_SPANS {
            self.spans.push(c);
        }
    }

    /// Sends one step to hop `i` and checks the answer.
    async fn exchange(
        &mut self,
        i: usize,
        input: &Input,
    ) -> std::result::Result<(Vec<u8>, SpanCommitment), String> {
        let (model, session, position) = (self.model.clone(), self.session.clone(), self.position);
        let (n_layers, vocab) = (self.n_layers, self.vocab);
        let link = &mut self.links[i];
        step(link, &model, &session, position, input, n_layers, vocab).await
    }

    /// Replaces hop `i` by a chain covering the same layers, replaying its inputs.
    async fn failover(&mut self, i: usize) -> Result<()> {
        let failed = self.links.remove(i);
        self.exclude.push(failed.hop.peer);
        for _ in 0..MAX_FAILOVER_ATTEMPTS {
            let offers = offers(&self.net, &self.model).await;
            let Some(route) = plan(&offers, failed.hop.from, failed.hop.to, &self.exclude) else {
                break;
            };
            let links = match self.connect(&route).await {
                Ok(l) => l,
                Err((peer, e)) => {
                    tracing::info!(%peer, error = %e, "replacement refused a session");
                    self.exclude.push(peer);
                    continue;
                }
            };
            match self.replay(links, &failed.history).await {
                Ok((links, disputed)) => {
                    self.stats.failovers += 1;
                    self.stats.disputed += disputed;
                    if disputed > 0 {
                        tracing::warn!(peer = %failed.hop.peer, disputed, "a failed shard server's commitments do not match the replay");
                    }
                    self.links.splice(i..i, links);
                    return Ok(());
                }
                Err((peer, e)) => {
                    tracing::info!(%peer, error = %e, "replay on a replacement failed");
                    self.exclude.push(peer);
                }
            }
        }
        Err(NodeError::UpstreamFailed {
            model: self.model.clone(),
            reasons: format!(
                "no replacement for layers [{}, {}) after its server failed",
                failed.hop.from, failed.hop.to
            ),
        })
    }

    /// Opens a session on every hop of `route`; on failure names the peer that failed.
    async fn connect(&mut self, route: &[Hop]) -> std::result::Result<Vec<Link>, (PeerId, String)> {
        let mut links = Vec::with_capacity(route.len());
        for hop in route {
            let stream = open_session(
                self.control.clone(),
                hop,
                &self.model,
                &self.session,
                self.n_layers,
            )
            .await
            .map_err(|e| (hop.peer, e))?;
            links.push(Link {
                hop: hop.clone(),
                stream,
                history: Vec::new(),
            });
        }
        Ok(links)
    }

    /// Feeds a failed hop's recorded inputs through `links`; returns them with their histories and
    /// the number of steps whose output disagrees with the failed server's commitment.
    async fn replay(
        &mut self,
        mut links: Vec<Link>,
        history: &[Sent],
    ) -> std::result::Result<(Vec<Link>, u32), (PeerId, String)> {
        let mut disputed = 0;
        for sent in history {
            let mut input = sent.input.clone();
            let mut sketch = [0.0; SKETCH_DIM];
            for link in links.iter_mut() {
                let (blob, c) = step(
                    link,
                    &self.model,
                    &self.session,
                    sent.position,
                    &input,
                    self.n_layers,
                    self.vocab,
                )
                .await
                .map_err(|e| (link.hop.peer, e))?;
                link.history.push(Sent {
                    position: sent.position,
                    input,
                    sketch: c.sketch,
                });
                sketch = c.sketch;
                self.keep(c);
                input = Input::Hidden(blob);
            }
            if !sketches_match(&sketch, &sent.sketch) {
                disputed += 1;
            }
        }
        Ok((links, disputed))
    }

    /// Ends the session on every hop.
    pub async fn close(mut self) {
        for link in &mut self.links {
            let _ = link.stream.close().await;
        }
    }
}

async fn open_session(
    mut control: Control,
    hop: &Hop,
    model: &str,
    session: &str,
    n_layers: u32,
) -> std::result::Result<Stream, String> {
    let mut stream = control
        .open_stream(hop.peer, crate::shard::protocol())
        .await
        .map_err(|e| e.to_string())?;
    let open = ClientMsg::Open {
        model: model.to_string(),
        from: hop.from,
        to: hop.to,
        session: session.to_string(),
    };
    write_msg(&mut stream, &open, &[])
        .await
        .map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(STEP_TIMEOUT, read_msg::<_, ServerMsg>(&mut stream))
        .await
        .map_err(|_| "no answer to open".to_string())?
        .map_err(|e| e.to_string())?;
    match reply.0 {
        ServerMsg::Ready { n_layers: n, .. } if n == n_layers => Ok(stream),
        ServerMsg::Ready { n_layers: n, .. } => {
            Err(format!("server's model has {n} layers, not {n_layers}"))
        }
        ServerMsg::Error { code, message } => Err(format!("{code:?}: {message}")),
        ServerMsg::Output { .. } => Err("unexpected output before any step".into()),
    }
}

/// Sends one step on `link` and checks the answer against what was asked: signature, session,
/// range, position, input and output digests, and the output's shape.
async fn step(
    link: &mut Link,
    model: &str,
    session: &str,
    position: u32,
    input: &Input,
    n_layers: u32,
    vocab: usize,
) -> std::result::Result<(Vec<u8>, SpanCommitment), String> {
    let (msg, blob, digest, seq_len) = match input {
        Input::Tokens(ids) => (
            ClientMsg::Step {
                position,
                tokens: Some(ids.clone()),
            },
            &[][..],
            crate::shard::tokens_digest(ids),
            ids.len() as u32,
        ),
        Input::Hidden(h) => {
            let seq = HiddenStates::decode(h).map_err(|e| e.to_string())?.seq_len;
            (
                ClientMsg::Step {
                    position,
                    tokens: None,
                },
                h.as_slice(),
                blake3::hash(h).to_hex().to_string(),
                seq,
            )
        }
    };
    let answer = async {
        write_msg(&mut link.stream, &msg, blob).await?;
        read_msg::<_, ServerMsg>(&mut link.stream).await
    };
    let (reply, out) = tokio::time::timeout(STEP_TIMEOUT, answer)
        .await
        .map_err(|_| "stalled".to_string())?
        .map_err(|e| e.to_string())?;
    let (body, signature) = match reply {
        ServerMsg::Output {
            commitment,
            signature,
        } => (commitment, signature),
        ServerMsg::Error { code, message } => return Err(format!("{code:?}: {message}")),
        ServerMsg::Ready { .. } => return Err("unexpected ready".into()),
    };
    let c = SpanCommitment::verify(&body, &signature, &link.hop.peer)?;
    let hop = &link.hop;
    if c.session != session
        || c.model != model
        || (c.from, c.to) != (hop.from, hop.to)
        || c.position != position
        || c.seq_len != seq_len
        || c.input != digest
        || c.output != blake3::hash(&out).to_hex().to_string()
    {
        return Err("the commitment does not match the step".into());
    }
    if hop.to == n_layers {
        if out.len() != vocab * 4 {
            return Err("logits of the wrong size".into());
        }
    } else {
        let h = HiddenStates::decode(&out).map_err(|e| e.to_string())?;
        if h.position != position || h.seq_len != seq_len || !h.data.iter().all(|v| v.is_finite()) {
            return Err("hidden states do not match the step".into());
        }
    }
    Ok((out, c))
}

/// Re-executes the span a commitment covers and checks it (specs/models.md, "Verified spans"):
/// `model` must hold layers `[0, c.to)` of the committed model, `tokens` the session's tokens up to
/// the end of the committed chunk. Runs the whole prefix in one pass, so it accepts honest
/// servers whatever chunking they used, within [`mycel_models::hidden::SKETCH_TOLERANCE`]. Blocking.
pub fn audit_span(model: &ChatModel, tokens: &[u32], c: &SpanCommitment) -> Result<bool> {
    let range = model.layer_range();
    let end = (c.position + c.seq_len) as usize;
    if range.start() != 0 || range.end() != c.to || tokens.len() < end || c.seq_len == 0 {
        return Err(NodeError::InvalidRequest(
            "the audit needs layers [0, to) and the tokens up to the chunk's end".into(),
        ));
    }
    let mut session = model.new_session();
    let mut rows: Vec<f32> = Vec::new();
    let mut dim = 0;
    let mut logits = None;
    for (n, chunk) in tokens[..end].chunks(PREFILL_CHUNK).enumerate() {
        let start = n * PREFILL_CHUNK;
        match model.forward_stage(&mut session, mycel_models::StageInput::Tokens(chunk))? {
            mycel_models::StageOutput::Hidden(t) => {
                let h = mycel_models::hidden_to_wire(&t, start)?;
                dim = h.hidden_dim as usize;
                let lo = (c.position as usize).saturating_sub(start).min(chunk.len());
                rows.extend_from_slice(&h.data[lo * dim..]);
            }
            mycel_models::StageOutput::Logits(t) => {
                logits = Some(
                    t.to_vec1::<f32>()
                        .map_err(mycel_models::ModelsError::from)?,
                )
            }
        }
    }
    let sketch = match logits {
        Some(l) => logits_sketch(l),
        None => HiddenStates {
            position: c.position,
            seq_len: c.seq_len,
            hidden_dim: dim as u32,
            data: rows,
        }
        .sketch(),
    };
    Ok(sketches_match(&sketch, &c.sketch))
}
