//! The libp2p side of the node: one actor task owns the [`Swarm`]; everything else talks to it through
//! a cloneable [`NetworkHandle`] over a bounded command channel.
//!
//! Behaviours: identify, ping, Kademlia (`/mycel/kad/1.0.0`, server mode, provider records
//! `model/<id>`), gossipsub (signed heartbeats on `mycel/health/1`), optional mDNS, connection limits,
//! and request-response inference (`/mycel/infer/1.0.0`, CBOR with size limits). specs/wire.md is the
//! normative description.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::kad::{self, store::MemoryStore};
use libp2p::metrics::Recorder;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, identify, mdns,
    multiaddr::Protocol, noise, ping, tcp, yamux,
};
use mycel_identity::Keypair;
use tokio::sync::{mpsc, oneshot, watch};

use crate::chat::{self, ChatJob, ModelHost};
use crate::error::{NodeError, Result};
use crate::heartbeat::Heartbeat;
use crate::metrics::{Metrics, Route};
use crate::peers::{MAX_ADDRS_PER_PEER, PeerTable};
use crate::wire::{self, InferErrorCode, InferResponse};

/// Capacity of the command channel from handles to the actor.
pub const COMMAND_CHANNEL_CAPACITY: usize = 256;
/// Capacity of the channel carrying finished inbound jobs back to the actor.
const ANSWER_CHANNEL_CAPACITY: usize = 64;
/// Peers whose state (addresses, heartbeat, rtt) the node tracks; connections beyond are refused.
pub const MAX_PEERS: usize = 128;
/// Provider lookups in flight at once.
const MAX_PENDING_LOOKUPS: usize = 64;
/// Outbound inference requests in flight at once.
const MAX_PENDING_OUTBOUND: usize = 64;
/// Inbound inference jobs accepted at once (running or queued in the model host).
const MAX_INBOUND_JOBS: usize = 32;
/// Providers returned by one lookup.
const MAX_PROVIDERS: usize = 16;
/// Idle connections are closed after this long.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of the network actor.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Listen multiaddrs.
    pub listen: Vec<Multiaddr>,
    /// Multiaddrs with `/p2p/<PeerId>` dialed at start.
    pub bootstrap: Vec<Multiaddr>,
    /// mDNS discovery.
    pub mdns: bool,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Deadline of one remote inference request (both as client and as server).
    pub infer_timeout: Duration,
    /// Where the actor counts peers, gossip, heartbeats and served jobs.
    pub metrics: Arc<Metrics>,
}

/// What the node knows about a connected peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// The peer.
    pub peer_id: PeerId,
    /// Addresses it is connected on.
    pub addrs: Vec<Multiaddr>,
    /// Models from its latest verified heartbeat.
    pub models: Vec<String>,
    /// Last ping round trip.
    pub rtt: Option<Duration>,
    /// Identify agent string.
    pub agent: Option<String>,
    /// Whether its heartbeats are current (a silent peer is down and never chosen as a provider).
    pub up: bool,
}

enum Command {
    Infer {
        peer: PeerId,
        job: ChatJob,
        reply: oneshot::Sender<std::result::Result<InferResponse, String>>,
    },
    FindProviders {
        model: String,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerSnapshot>>,
    },
    Dial {
        addr: Multiaddr,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// Cloneable handle to the network actor.
#[derive(Clone)]
pub struct NetworkHandle {
    tx: mpsc::Sender<Command>,
    local_peer: PeerId,
    listen_rx: watch::Receiver<Vec<Multiaddr>>,
    control: libp2p_stream::Control,
}

impl std::fmt::Debug for NetworkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkHandle")
            .field("local_peer", &self.local_peer)
            .finish()
    }
}

impl NetworkHandle {
    /// This node's PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer
    }

    /// A control for opening raw streams (one per concurrent open, see libp2p-stream's backpressure).
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Current listen addresses (without `/p2p`).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_rx.borrow().clone()
    }

    /// Waits until at least `n` listen addresses are up, or `timeout` passed.
    pub async fn wait_listening(&self, n: usize, timeout: Duration) -> Vec<Multiaddr> {
        let mut rx = self.listen_rx.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|v| v.len() >= n)).await;
        self.listen_addrs()
    }

    async fn send(&self, cmd: Command) -> Result<()> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| NodeError::Network("network actor stopped".into()))
    }

    /// Sends an inference request to `peer` and waits for its answer (bounded by the protocol timeout).
    pub async fn infer(
        &self,
        peer: PeerId,
        job: ChatJob,
    ) -> Result<std::result::Result<InferResponse, String>> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Infer { peer, job, reply }).await?;
        rx.await
            .map_err(|_| NodeError::Network("network actor dropped the request".into()))
    }

    /// Peers that serve `model`: up peers whose heartbeat lists it (lowest round trip and queue first),
    /// else a DHT provider lookup (without peers known to be down).
    pub async fn find_providers(&self, model: &str) -> Result<Vec<PeerId>> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::FindProviders {
            model: model.to_string(),
            reply,
        })
        .await?;
        Ok(rx.await.unwrap_or_default())
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerSnapshot>> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Peers { reply }).await?;
        rx.await
            .map_err(|_| NodeError::Network("network actor dropped the request".into()))
    }

    /// Dials an address (with `/p2p/<PeerId>` the peer also joins the DHT routing table).
    pub async fn dial(&self, addr: Multiaddr) -> Result<()> {
        self.send(Command::Dial { addr }).await
    }

    /// Stops the actor and waits until the swarm is dropped.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.send(Command::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    infer: request_response::cbor::Behaviour<wire::InferRequest, InferResponse>,
    stream: libp2p_stream::Behaviour,
}

/// Builds the swarm, starts listening and dialing, and spawns the actor.
pub fn start(
    key: &Keypair,
    cfg: NetworkConfig,
    host: Arc<ModelHost>,
) -> Result<(NetworkHandle, tokio::task::JoinHandle<()>)> {
    let net_err = |e: &dyn std::fmt::Display| NodeError::Network(e.to_string());
    let mdns_on = cfg.mdns;
    let infer_timeout = cfg.infer_timeout;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| net_err(&e))?
        .with_quic()
        .with_behaviour(
            |k| -> std::result::Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let peer_id = k.public().to_peer_id();
                let mut kad_cfg = kad::Config::new(StreamProtocol::new(wire::KAD_PROTOCOL));
                kad_cfg
                    .set_query_timeout(wire::PROVIDER_LOOKUP_TIMEOUT)
                    .disjoint_query_paths(true);
                let mut kad =
                    kad::Behaviour::with_config(peer_id, MemoryStore::new(peer_id), kad_cfg);
                // Serve DHT requests even before an external address is confirmed (loopback nodes never get one).
                kad.set_mode(Some(kad::Mode::Server));
                let gossip_cfg = gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_secs(1))
                    .validation_mode(gossipsub::ValidationMode::Strict)
                    .max_transmit_size(wire::MAX_GOSSIP_BYTES)
                    .build()?;
                let gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(k.clone()),
                    gossip_cfg,
                )?;
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config::default(),
                        peer_id,
                    )?)
                } else {
                    None
                };
                let codec = request_response::cbor::codec::Codec::default()
                    .set_request_size_maximum(wire::MAX_INFER_REQUEST_BYTES)
                    .set_response_size_maximum(wire::MAX_INFER_RESPONSE_BYTES);
                let infer = request_response::Behaviour::with_codec(
                    codec,
                    [(
                        StreamProtocol::new(wire::INFER_PROTOCOL),
                        ProtocolSupport::Full,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(infer_timeout)
                        .with_max_concurrent_streams(wire::MAX_CONCURRENT_INFER_STREAMS),
                );
                let limits = connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established(Some(MAX_PEERS as u32))
                        .with_max_established_per_peer(Some(4))
                        .with_max_pending_incoming(Some(32)),
                );
                Ok(Behaviour {
                    limits,
                    identify: identify::Behaviour::new(
                        identify::Config::new(wire::IDENTIFY_PROTOCOL.into(), k.public())
                            .with_agent_version(format!(
                                "mycel-node/{}",
                                env!("CARGO_PKG_VERSION")
                            )),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    kad,
                    gossipsub,
                    mdns: Toggle::from(mdns),
                    infer,
                    stream: libp2p_stream::Behaviour::new(),
                })
            },
        )
        .map_err(|e| net_err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();

    let topic = IdentTopic::new(wire::HEALTH_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| net_err(&e))?;
    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Network(format!("cannot listen on {addr}: {e}")))?;
    }
    for model in host.model_ids() {
        swarm
            .behaviour_mut()
            .kad
            .start_providing(kad::RecordKey::new(&wire::model_key(&model)))
            .map_err(|e| net_err(&e))?;
    }
    for addr in &cfg.bootstrap {
        dial_addr(&mut swarm, addr.clone());
    }
    let _ = swarm.behaviour_mut().kad.bootstrap();

    let control = swarm.behaviour().stream.new_control();
    let incoming = control
        .clone()
        .accept(crate::infer_stream::protocol())
        .map_err(|e| net_err(&e))?;
    let stream_server = tokio::spawn(crate::infer_stream::serve(
        incoming,
        host.clone(),
        cfg.infer_timeout,
        cfg.metrics.clone(),
    ));
    let (tx, rx) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
    let (listen_tx, listen_rx) = watch::channel(Vec::new());
    let (answer_tx, answer_rx) = mpsc::channel(ANSWER_CHANNEL_CAPACITY);
    let local_peer = *swarm.local_peer_id();
    let peers = PeerTable::new(MAX_PEERS, cfg.heartbeat_interval);
    let actor = Actor {
        swarm,
        key: key.clone(),
        host,
        topic,
        cfg,
        peers,
        lookups: HashMap::new(),
        outbound: HashMap::new(),
        inbound_jobs: 0,
        heartbeat_seq: 0,
        listen_tx,
        answer_tx,
        stream_server,
    };
    let task = tokio::spawn(actor.run(rx, answer_rx));
    Ok((
        NetworkHandle {
            tx,
            local_peer,
            listen_rx,
            control,
        },
        task,
    ))
}

fn dial_addr(swarm: &mut Swarm<Behaviour>, addr: Multiaddr) {
    if let Some(Protocol::P2p(peer)) = addr.iter().last() {
        let base: Multiaddr = addr
            .iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect();
        swarm.behaviour_mut().kad.add_address(&peer, base);
    }
    if let Err(e) = swarm.dial(addr.clone()) {
        tracing::warn!(%addr, error = %e, "dial failed");
    }
}

struct Lookup {
    reply: oneshot::Sender<Vec<PeerId>>,
    found: Vec<PeerId>,
}

/// A finished inbound job, handed back to the actor to answer on its channel.
type InboundAnswer = (ResponseChannel<InferResponse>, InferResponse);

struct Actor {
    swarm: Swarm<Behaviour>,
    key: Keypair,
    host: Arc<ModelHost>,
    topic: IdentTopic,
    cfg: NetworkConfig,
    peers: PeerTable,
    lookups: HashMap<kad::QueryId, Lookup>,
    outbound:
        HashMap<OutboundRequestId, oneshot::Sender<std::result::Result<InferResponse, String>>>,
    inbound_jobs: usize,
    heartbeat_seq: u64,
    listen_tx: watch::Sender<Vec<Multiaddr>>,
    answer_tx: mpsc::Sender<InboundAnswer>,
    stream_server: tokio::task::JoinHandle<()>,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut answers: mpsc::Receiver<InboundAnswer>,
    ) {
        let mut heartbeat = tokio::time::interval(self.cfg.heartbeat_interval);
        let ack = loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown { done }) => break Some(done),
                    Some(cmd) => self.on_command(cmd),
                    None => break None,
                },
                Some((channel, response)) = answers.recv() => {
                    self.inbound_jobs = self.inbound_jobs.saturating_sub(1);
                    if self.swarm.behaviour_mut().infer.send_response(channel, response).is_err() {
                        tracing::debug!("inference requester left before the answer");
                    }
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = heartbeat.tick() => {
                    self.publish_heartbeat();
                    self.cfg.metrics.peers_up.set(self.peers.up_count(Instant::now()) as i64);
                }
            }
        };
        // Dropping the swarm closes every connection and listener before the shutdown is acknowledged.
        self.stream_server.abort();
        drop(self);
        if let Some(done) = ack {
            let _ = done.send(());
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Infer { peer, job, reply } => {
                if self.outbound.len() >= MAX_PENDING_OUTBOUND {
                    let _ = reply.send(Err("too many inference requests in flight".into()));
                    return;
                }
                let id = self.swarm.behaviour_mut().infer.send_request(&peer, job);
                self.outbound.insert(id, reply);
            }
            Command::FindProviders { model, reply } => {
                let known = self.peers.providers(&model, Instant::now(), MAX_PROVIDERS);
                if !known.is_empty() || self.lookups.len() >= MAX_PENDING_LOOKUPS {
                    let _ = reply.send(known);
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(kad::RecordKey::new(&wire::model_key(&model)));
                self.lookups.insert(
                    id,
                    Lookup {
                        reply,
                        found: Vec::new(),
                    },
                );
            }
            Command::Peers { reply } => {
                let now = Instant::now();
                let list = self
                    .peers
                    .iter()
                    .map(|(p, s)| PeerSnapshot {
                        peer_id: *p,
                        addrs: s.addrs.clone(),
                        models: s.models.clone(),
                        rtt: s.rtt,
                        agent: s.agent.clone(),
                        up: self.peers.is_up(p, now),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Dial { addr } => dial_addr(&mut self.swarm, addr),
            Command::Shutdown { .. } => {}
        }
    }

    fn publish_heartbeat(&mut self) {
        self.heartbeat_seq += 1;
        let hb = Heartbeat {
            peer_id: self.swarm.local_peer_id().to_base58(),
            models: self.host.model_ids(),
            load: u32::try_from(self.host.load()).unwrap_or(u32::MAX),
            seq: self.heartbeat_seq,
        };
        let bytes = hb.sign(&self.key);
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes)
        {
            Ok(_) => {
                self.cfg.metrics.heartbeats_sent.inc();
            }
            // InsufficientPeers until a peer subscribed: expected on a lone node.
            Err(e) => tracing::trace!(error = %e, "heartbeat not published"),
        };
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.cfg.metrics.libp2p.0.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listen_tx.send_modify(|v| v.push(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_tx.send_modify(|v| v.retain(|a| *a != address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                self.cfg.metrics.connections.inc();
                if !self
                    .peers
                    .connected(peer_id, endpoint.get_remote_address().clone())
                {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                self.cfg.metrics.peers.set(self.peers.len() as i64);
                tracing::debug!(%peer_id, "connected");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                self.cfg.metrics.connections.dec();
                if num_established == 0 {
                    self.peers.disconnected(&peer_id);
                    self.cfg.metrics.peers.set(self.peers.len() as i64);
                    tracing::debug!(%peer_id, "disconnected");
                }
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        let recorder = &self.cfg.metrics.libp2p.0;
        match &event {
            BehaviourEvent::Identify(ev) => recorder.record(ev),
            BehaviourEvent::Ping(ev) => recorder.record(ev),
            BehaviourEvent::Kad(ev) => recorder.record(ev),
            BehaviourEvent::Gossipsub(ev) => recorder.record(ev),
            _ => {}
        }
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let kad_proto = StreamProtocol::new(wire::KAD_PROTOCOL);
                if info.protocols.contains(&kad_proto) {
                    for addr in info.listen_addrs.iter().take(MAX_ADDRS_PER_PEER) {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, addr.clone());
                    }
                }
                self.peers.agent(&peer_id, &info.agent_version);
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                self.peers.rtt(&peer, rtt);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    if self.peers.is_full() || self.peers.contains(&peer) {
                        continue;
                    }
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    let _ = self.swarm.dial(addr);
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. }) => {
                let Some(source) = message.source else {
                    self.cfg.metrics.gossip(false);
                    return;
                };
                let Some(hb) = Heartbeat::verify(&message.data, &source) else {
                    self.cfg.metrics.gossip(false);
                    tracing::debug!(%source, "dropped an invalid heartbeat");
                    return;
                };
                // Valid but stale (a replay) or from a peer we are not connected to: ignored.
                let fresh = self.peers.heartbeat(&source, hb, Instant::now());
                self.cfg.metrics.gossip(fresh);
                if fresh {
                    self.cfg.metrics.heartbeats_received.inc();
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            }) => self.on_kad_progress(id, result, step.last),
            BehaviourEvent::Infer(ev) => self.on_infer_event(ev),
            _ => {}
        }
    }

    fn on_kad_progress(&mut self, id: kad::QueryId, result: kad::QueryResult, last: bool) {
        let me = *self.swarm.local_peer_id();
        let now = Instant::now();
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        if let kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
            providers,
            ..
        })) = result
        {
            for p in providers {
                // A connected peer whose heartbeats stopped is down: its DHT record is stale.
                if p != me
                    && !self.peers.is_down(&p, now)
                    && !lookup.found.contains(&p)
                    && lookup.found.len() < MAX_PROVIDERS
                {
                    lookup.found.push(p);
                }
            }
        }
        // Answer at the first provider found: latency matters more than a complete list.
        if last || !lookup.found.is_empty() {
            if let Some(lookup) = self.lookups.remove(&id) {
                let _ = lookup.reply.send(lookup.found);
            }
            if !last && let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                q.finish();
            }
        }
    }

    fn on_infer_event(
        &mut self,
        event: request_response::Event<wire::InferRequest, InferResponse>,
    ) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_inbound_job(peer, request, channel),
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound inference request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound_job(
        &mut self,
        peer: PeerId,
        job: ChatJob,
        channel: ResponseChannel<InferResponse>,
    ) {
        let refuse = |code, message: String| InferResponse::Error { code, message };
        let early = if let Err(e) = job.validate() {
            Some(refuse(InferErrorCode::InvalidRequest, e.to_string()))
        } else if !self.host.serves(&job.model) {
            Some(refuse(
                InferErrorCode::ModelNotFound,
                format!("this node does not serve `{}`", job.model),
            ))
        } else if self.inbound_jobs >= MAX_INBOUND_JOBS {
            Some(refuse(InferErrorCode::Busy, "too many inbound jobs".into()))
        } else {
            None
        };
        if let Some(resp) = early {
            let _ = self
                .swarm
                .behaviour_mut()
                .infer
                .send_response(channel, resp);
            return;
        }
        tracing::info!(%peer, model = %job.model, "serving inference for a peer");
        self.cfg.metrics.request(Route::Inbound);
        self.inbound_jobs += 1;
        let host = self.host.clone();
        let answers = self.answer_tx.clone();
        let deadline = self.cfg.infer_timeout;
        tokio::spawn(async move {
            let run = async {
                let rx = host.start(job).await?;
                chat::collect(rx).await
            };
            let resp = match tokio::time::timeout(deadline, run).await {
                Ok(Ok(answer)) => InferResponse::Answer(answer),
                Ok(Err(NodeError::Busy(m))) => refuse(InferErrorCode::Busy, m),
                Ok(Err(e)) => refuse(InferErrorCode::Failed, e.to_string()),
                Err(_) => refuse(InferErrorCode::Failed, "deadline exceeded".into()),
            };
            let _ = answers.send((channel, resp)).await;
        });
    }
}
