//! The libp2p side of the node: one actor task owns the [`Swarm`]; everything else talks to it through
//! a cloneable [`NetworkHandle`] over a bounded command channel.
//!
//! Behaviours: identify, ping, Kademlia (`/mycel/kad/1.0.0`, server mode, provider records
//! `model/<id>`), gossipsub (signed heartbeats on `mycel/health/1`), optional mDNS, connection limits,
//! a peer block list (operators and the test harness cut peers off), and request-response inference
//! (`/mycel/infer/1.0.0`, CBOR with size limits). In consortium mode ([`crate::membership`]) also
//! the membership handshake (`/mycel/membership/1.0.0`), revocation gossip and an optional pnet key.
//! specs/wire.md is the normative description.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::kad::{self, store::MemoryStore, store::RecordStore};
use libp2p::metrics::Recorder;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, connection_limits, identify, mdns,
    multiaddr::Protocol, ping,
};
use mycel_identity::Keypair;
use tokio::sync::{mpsc, oneshot, watch};

use crate::audit::{self, AuditInbound, AuditRequest, AuditResponse};
use crate::chat::{self, ChatJob, ModelHost};
use crate::error::{NodeError, Result};
use crate::heartbeat::Heartbeat;
use crate::ledger::LedgerInbound;
use crate::ledger::wire::{self as ledger_wire, SyncRequest, SyncResponse};
use crate::membership::{self, Gatekeeper, HandshakeResponse, Presentation, Verdict};
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
/// Ledger sync requests in flight at once, each way.
const MAX_SYNC_STREAMS: usize = 16;
/// Deadline of one ledger sync request.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);
/// Application scores set per command (the stake table holds at most 256 accounts).
const MAX_APP_SCORES: usize = 1024;
/// Idle connections are closed after this long.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Heartbeats between re-publications of the node's DID record (and the first heartbeat).
const RECORD_REPUBLISH_HEARTBEATS: u64 = 60;
/// Peers the block list holds at most; blocking more is refused.
pub const MAX_BLOCKED_PEERS: usize = 1024;

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
    /// The ledger service's inbox (none: the node keeps no ledger; ledger gossip is ignored and sync
    /// requests are refused). The actor only ever `try_send`s into it, so a slow ledger can never
    /// stall the swarm.
    pub ledger: Option<mpsc::Sender<LedgerInbound>>,
    /// The ledger handle once the service runs, for receipts of paid streamed jobs.
    pub ledger_handle: crate::infer_stream::LedgerSlot,
    /// The auditor's inbox (none: this node judges no audits and refuses them).
    pub audit: Option<mpsc::Sender<AuditInbound>>,
    /// Consortium mode: admit only members ([`crate::membership`]). None: an open network.
    pub consortium: Option<Arc<membership::Consortium>>,
    /// Serve as a libp2p relay (circuit relay v2) for other peers.
    pub relay_server: bool,
    /// Best peers kept connected, and peers kept at random beyond them ([`PeerTable::excess`]).
    pub keep_peers: (usize, usize),
    /// The expert router's inbox and its embedding dimension (none: centroid gossip is not
    /// subscribed). Verified updates are `try_send`ed; a full inbox drops them.
    pub centroids: Option<(usize, mpsc::Sender<crate::federation::Inbound>)>,
    /// Model manifests: gossip on [`crate::manifest::MANIFEST_TOPIC`] is checked and kept here
    /// before it is forwarded (the adoption service watches it).
    pub manifests: Arc<crate::manifest::ManifestBook>,
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
    /// Layer ranges from its latest verified heartbeat.
    pub shards: Vec<crate::heartbeat::ShardAd>,
    /// Recent tok/s, free memory (MiB) and version from its latest verified heartbeat.
    pub health: (u32, u64, String),
    /// Last ping round trip.
    pub rtt: Option<Duration>,
    /// Identify agent string.
    pub agent: Option<String>,
    /// Whether its heartbeats are current (a silent peer is down and never chosen as a provider).
    pub up: bool,
    /// Queue depth from its latest heartbeat.
    pub load: u32,
    /// EWMA of ping round trips.
    pub rtt_ewma: Option<Duration>,
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
    DialPeer {
        peer: PeerId,
    },
    Block {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    Unblock {
        peer: PeerId,
    },
    Publish {
        topic: &'static str,
        data: Vec<u8>,
    },
    Validate {
        id: gossipsub::MessageId,
        source: PeerId,
        acceptance: gossipsub::MessageAcceptance,
    },
    Sync {
        peer: PeerId,
        request: SyncRequest,
        reply: oneshot::Sender<std::result::Result<SyncResponse, String>>,
    },
    SyncRespond {
        id: u64,
        response: SyncResponse,
    },
    Audit {
        peer: PeerId,
        request: AuditRequest,
        reply: oneshot::Sender<std::result::Result<AuditResponse, String>>,
    },
    AuditRespond {
        id: u64,
        response: AuditResponse,
    },
    AppScores {
        scores: Vec<(PeerId, f64)>,
    },
    Withdraw,
    FindPeer {
        did: String,
        reply: oneshot::Sender<Option<crate::peer_record::PeerRecord>>,
    },
    Provide {
        key: Vec<u8>,
        on: bool,
    },
    Revoke {
        revocation: Box<mycel_identity::revocation::Revocation>,
        reply: oneshot::Sender<std::result::Result<bool, String>>,
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
    admitted: membership::Admitted,
    admission_timeout: Duration,
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

    /// Blocks `peer`: closes every connection to it and refuses new ones until [`Self::unblock_peer`].
    /// `Ok(false)` when the block list already holds [`MAX_BLOCKED_PEERS`] other peers.
    pub async fn block_peer(&self, peer: PeerId) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Block { peer, reply }).await?;
        rx.await
            .map_err(|_| NodeError::Network("network actor dropped the request".into()))
    }

    /// Lifts a block; the peer may connect again (nothing is redialed).
    pub async fn unblock_peer(&self, peer: PeerId) -> Result<()> {
        self.send(Command::Unblock { peer }).await
    }

    /// Completes when the network actor has stopped (the node shut down).
    pub async fn stopped(&self) {
        self.tx.closed().await;
    }

    /// Publishes on a gossip topic (blocks, votes, centroid updates, model manifests).
    pub async fn publish(&self, topic: &'static str, data: Vec<u8>) -> Result<()> {
        self.send(Command::Publish { topic, data }).await
    }

    /// Reports the ledger's verdict on a gossip message: only accepted messages are forwarded, and a
    /// rejected one costs its sender gossipsub score.
    pub async fn validate(
        &self,
        id: gossipsub::MessageId,
        source: PeerId,
        acceptance: gossipsub::MessageAcceptance,
    ) -> Result<()> {
        self.send(Command::Validate {
            id,
            source,
            acceptance,
        })
        .await
    }

    /// Sends a command carrying a reply channel and waits for the answer (a transport failure is a
    /// [`NodeError::Network`]).
    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<std::result::Result<T, String>>) -> Command,
    ) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await
            .map_err(|_| NodeError::Network("network actor dropped the request".into()))?
            .map_err(NodeError::Network)
    }

    /// Sends a ledger sync request and waits for the answer.
    pub async fn sync(&self, peer: PeerId, request: SyncRequest) -> Result<SyncResponse> {
        self.request(|reply| Command::Sync {
            peer,
            request,
            reply,
        })
        .await
    }

    /// Answers the inbound sync request `id` (from [`LedgerInbound::SyncRequest`]).
    pub async fn respond_sync(&self, id: u64, response: SyncResponse) -> Result<()> {
        self.send(Command::SyncRespond { id, response }).await
    }

    /// Asks a drawn validator to judge a job and waits for its verdict.
    pub async fn audit(&self, peer: PeerId, request: AuditRequest) -> Result<AuditResponse> {
        self.request(|reply| Command::Audit {
            peer,
            request,
            reply,
        })
        .await
    }

    /// Answers the inbound audit request `id` (from [`AuditInbound`]).
    pub async fn respond_audit(&self, id: u64, response: AuditResponse) -> Result<()> {
        self.send(Command::AuditRespond { id, response }).await
    }

    /// Withdraws this node's provider records from the DHT (at shutdown).
    pub async fn withdraw_records(&self) -> Result<()> {
        self.send(Command::Withdraw).await
    }

    /// The signed record of where the holder of `did` can be reached, from the DHT (verified).
    pub async fn find_peer(&self, did: &str) -> Result<Option<crate::peer_record::PeerRecord>> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::FindPeer {
            did: did.to_string(),
            reply,
        })
        .await?;
        Ok(rx.await.unwrap_or_default())
    }

    /// Starts (`on`) or stops announcing this node as a provider of a DHT key.
    pub async fn provide(&self, key: Vec<u8>, on: bool) -> Result<()> {
        self.send(Command::Provide { key, on }).await
    }

    /// Sets gossipsub's application-specific scores (P5) of peers (specs/scoring.md §6).
    pub async fn set_app_scores(&self, scores: Vec<(PeerId, f64)>) -> Result<()> {
        self.send(Command::AppScores { scores }).await
    }

    /// Applies a signed membership revocation (consortium mode) and gossips it: the revoked member
    /// is disconnected and blocked here, and every member that receives it does the same.
    /// `Ok(true)` when it was new, `Ok(false)` when already known (not re-gossiped); an error when
    /// this node is not in consortium mode or the revocation is not valid for it.
    pub async fn revoke_membership(
        &self,
        revocation: mycel_identity::revocation::Revocation,
    ) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Revoke {
            revocation: Box::new(revocation),
            reply,
        })
        .await?;
        rx.await
            .map_err(|_| NodeError::Network("network actor dropped the request".into()))?
            .map_err(NodeError::InvalidRequest)
    }

    /// Whether `peer` may be sent work: always in an open network; in consortium mode once it proved
    /// its membership (a peer not connected yet is dialed, and the handshake waited for, at most the
    /// handshake timeout).
    pub async fn wait_admitted(&self, peer: PeerId) -> bool {
        if self.admitted.contains(&peer) {
            return true;
        }
        if self.send(Command::DialPeer { peer }).await.is_err() {
            return false;
        }
        self.admitted.wait_for(&peer, self.admission_timeout).await
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
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    /// NAT status from peers' dial-backs (public addresses only).
    autonat: libp2p::autonat::Behaviour,
    /// Reservations and circuits through relays (client side, always on).
    relay_client: libp2p::relay::client::Behaviour,
    /// Relay server for other peers (`relay_server = true`).
    relay_server: Toggle<libp2p::relay::Behaviour>,
    /// Hole punching of relayed connections.
    dcutr: libp2p::dcutr::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    infer: request_response::cbor::Behaviour<wire::InferRequest, InferResponse>,
    ledger_sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
    audit: request_response::cbor::Behaviour<AuditRequest, AuditResponse>,
    stream: libp2p_stream::Behaviour,
    membership: Toggle<request_response::cbor::Behaviour<Presentation, HandshakeResponse>>,
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
    let gate = match &cfg.consortium {
        Some(c) => Some(Gatekeeper::new(
            c.clone(),
            &mycel_identity::Did::from_public_key(key.public()),
        )?),
        None => None,
    };
    let psk = cfg.consortium.as_ref().and_then(|c| c.psk());
    let consortium_on = gate.is_some();
    let relay_server = cfg.relay_server;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
        .with_tokio()
        .with_other_transport(|k| membership::transport(k, psk))
        .map_err(|e| net_err(&e))?
        .with_relay_client(libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .map_err(|e| net_err(&e))?
        .with_behaviour(
            |k, relay_client| -> std::result::Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let peer_id = k.public().to_peer_id();
                let mut kad_cfg = kad::Config::new(StreamProtocol::new(wire::KAD_PROTOCOL));
                // Records are stored only after `on_inbound_record` verified them.
                kad_cfg.set_record_filtering(kad::StoreInserts::FilterBoth);
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
                    // Nothing is forwarded before the node checked it (report_message_validation_result).
                    .validate_messages()
                    .max_transmit_size(wire::MAX_GOSSIP_BYTES)
                    .build()?;
                let mut gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(k.clone()),
                    gossip_cfg,
                )?;
                gossipsub.with_peer_score(
                    gossip_score_params(),
                    gossipsub::PeerScoreThresholds::default(),
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
                let sync_codec = request_response::cbor::codec::Codec::default()
                    .set_request_size_maximum(ledger_wire::MAX_SYNC_REQUEST_BYTES)
                    .set_response_size_maximum(ledger_wire::MAX_SYNC_RESPONSE_BYTES);
                let ledger_sync = request_response::Behaviour::with_codec(
                    sync_codec,
                    [(
                        StreamProtocol::new(ledger_wire::SYNC_PROTOCOL),
                        ProtocolSupport::Full,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(SYNC_TIMEOUT)
                        .with_max_concurrent_streams(MAX_SYNC_STREAMS),
                );
                let audit_codec = request_response::cbor::codec::Codec::default()
                    .set_request_size_maximum(audit::MAX_AUDIT_REQUEST_BYTES)
                    .set_response_size_maximum(audit::MAX_AUDIT_RESPONSE_BYTES);
                let audit = request_response::Behaviour::with_codec(
                    audit_codec,
                    [(
                        StreamProtocol::new(audit::AUDIT_PROTOCOL),
                        ProtocolSupport::Full,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(audit::AUDIT_TIMEOUT)
                        .with_max_concurrent_streams(MAX_SYNC_STREAMS),
                );
                let limits = connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established(Some(MAX_PEERS as u32))
                        .with_max_established_per_peer(Some(4))
                        .with_max_pending_incoming(Some(32)),
                );
                Ok(Behaviour {
                    limits,
                    blocked: allow_block_list::Behaviour::default(),
                    identify: identify::Behaviour::new(
                        identify::Config::new(wire::IDENTIFY_PROTOCOL.into(), k.public())
                            .with_agent_version(format!(
                                "mycel-node/{}",
                                env!("CARGO_PKG_VERSION")
                            )),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    autonat: libp2p::autonat::Behaviour::new(
                        peer_id,
                        libp2p::autonat::Config::default(),
                    ),
                    relay_client,
                    relay_server: Toggle::from(
                        relay_server.then(|| libp2p::relay::Behaviour::new(peer_id, Default::default())),
                    ),
                    dcutr: libp2p::dcutr::Behaviour::new(peer_id),
                    kad,
                    gossipsub,
                    mdns: Toggle::from(mdns),
                    infer,
                    ledger_sync,
                    audit,
                    stream: libp2p_stream::Behaviour::new(),
                    membership: Toggle::from(consortium_on.then(membership::behaviour)),
                })
            },
        )
        .map_err(|e| net_err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();

    let topic = IdentTopic::new(wire::HEALTH_TOPIC);
    for t in [
        wire::HEALTH_TOPIC,
        ledger_wire::BLOCKS_TOPIC,
        ledger_wire::VOTES_TOPIC,
        crate::manifest::MANIFEST_TOPIC,
    ] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(t))
            .map_err(|e| net_err(&e))?;
    }
    if consortium_on {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(membership::MEMBERSHIP_TOPIC))
            .map_err(|e| net_err(&e))?;
    }
    if cfg.centroids.is_some() {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(crate::experts::CENTROID_TOPIC))
            .map_err(|e| net_err(&e))?;
    }
    let mut relayed = RelayedListens::default();
    for addr in &cfg.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Network(format!("cannot listen on {addr}: {e}")))?;
        relayed.listening(id, addr);
    }
    for model in host.model_ids() {
        swarm
            .behaviour_mut()
            .kad
            .start_providing(kad::RecordKey::new(&wire::model_key(&model)))
            .map_err(|e| net_err(&e))?;
    }
    for ad in host.shard_ads() {
        swarm
            .behaviour_mut()
            .kad
            .start_providing(kad::RecordKey::new(&wire::shard_key(
                &ad.model, ad.from, ad.to,
            )))
            .map_err(|e| net_err(&e))?;
    }
    for addr in &cfg.bootstrap {
        dial_addr(&mut swarm, addr.clone());
    }
    let _ = swarm.behaviour_mut().kad.bootstrap();

    let control = swarm.behaviour().stream.new_control();
    let admitted = gate
        .as_ref()
        .map_or_else(membership::Admitted::open, Gatekeeper::admitted);
    let admission_timeout = gate
        .as_ref()
        .map_or(Duration::ZERO, Gatekeeper::handshake_timeout);
    let incoming = control
        .clone()
        .accept(crate::infer_stream::protocol())
        .map_err(|e| net_err(&e))?;
    let stream_server = tokio::spawn(crate::infer_stream::serve(
        incoming,
        host.clone(),
        cfg.infer_timeout,
        cfg.metrics.clone(),
        cfg.ledger_handle.clone(),
        admitted.clone(),
    ));
    let shard_incoming = control
        .clone()
        .accept(crate::shard::protocol())
        .map_err(|e| net_err(&e))?;
    let shard_server = tokio::spawn(crate::shard::serve(
        shard_incoming,
        host.clone(),
        key.clone(),
        admitted.clone(),
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
        record_lookups: HashMap::new(),
        outbound: Pending::new(),
        inbound_jobs: 0,
        sync_out: Pending::new(),
        sync_in: HashMap::new(),
        next_sync_in: 0,
        audit_out: Pending::new(),
        audit_in: HashMap::new(),
        heartbeat_seq: 0,
        last_generated: None,
        listen_tx,
        answer_tx,
        stream_server,
        shard_server,
        gate,
        relayed,
        recently_closed: HashMap::new(),
    };
    let task = tokio::spawn(actor.run(rx, answer_rx));
    Ok((
        NetworkHandle {
            tx,
            local_peer,
            listen_rx,
            control,
            admitted,
            admission_timeout,
        },
        task,
    ))
}

/// Outbound request-response requests waiting for their answers, by request id (bounded by the
/// callers, which refuse new requests beyond their limits).
struct Pending<T> {
    waiting: HashMap<OutboundRequestId, oneshot::Sender<std::result::Result<T, String>>>,
}

impl<T> Pending<T> {
    fn new() -> Self {
        Self {
            waiting: HashMap::new(),
        }
    }

    /// Sends a request through `send` and keeps its waiter, or refuses it when `limit` requests
    /// are already in flight.
    fn start(
        &mut self,
        (limit, what): (usize, &str),
        reply: oneshot::Sender<std::result::Result<T, String>>,
        send: impl FnOnce() -> OutboundRequestId,
    ) {
        if self.waiting.len() >= limit {
            let _ = reply.send(Err(format!("too many {what} requests in flight")));
            return;
        }
        self.waiting.insert(send(), reply);
    }

    /// Settles the outbound side of a request-response event (answers and failures go to their
    /// waiters); hands back an inbound request for the caller to handle.
    fn on_event<Req>(
        &mut self,
        event: request_response::Event<Req, T>,
        protocol: &'static str,
    ) -> Option<(PeerId, Req, ResponseChannel<T>)> {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => Some((peer, request, channel)),
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.waiting.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
                None
            }
            Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.waiting.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
                None
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, protocol, "inbound request failed");
                None
            }
            Event::ResponseSent { .. } => None,
        }
    }
}

/// Gossipsub peer scoring (specs/wire.md): P5 from the ledger (stake and audited work), P4 makes
/// every rejected message cost its sender, P6 penalizes many peers behind one IP (loopback exempt, so
/// local devnets and tests work), P3 is off (ledger and health topics are quiet by nature).
fn gossip_score_params() -> gossipsub::PeerScoreParams {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 0.5,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 20.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.5,
        ..Default::default()
    };
    let mut params = gossipsub::PeerScoreParams {
        app_specific_weight: 1.0,
        ip_colocation_factor_whitelist: [std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    for t in [
        wire::HEALTH_TOPIC,
        ledger_wire::BLOCKS_TOPIC,
        ledger_wire::VOTES_TOPIC,
        crate::manifest::MANIFEST_TOPIC,
    ] {
        params
            .topics
            .insert(IdentTopic::new(t).hash(), topic.clone());
    }
    params
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
    record_lookups: HashMap<kad::QueryId, oneshot::Sender<Option<crate::peer_record::PeerRecord>>>,
    outbound: Pending<InferResponse>,
    inbound_jobs: usize,
    sync_out: Pending<SyncResponse>,
    sync_in: HashMap<u64, ResponseChannel<SyncResponse>>,
    next_sync_in: u64,
    audit_out: Pending<AuditResponse>,
    audit_in: HashMap<u64, ResponseChannel<AuditResponse>>,
    heartbeat_seq: u64,
    /// Tokens generated at the previous heartbeat, and when.
    last_generated: Option<(u64, Instant)>,
    listen_tx: watch::Sender<Vec<Multiaddr>>,
    answer_tx: mpsc::Sender<InboundAnswer>,
    stream_server: tokio::task::JoinHandle<()>,
    shard_server: tokio::task::JoinHandle<()>,
    /// Consortium mode: who proved membership (None: open network, everyone is admitted).
    gate: Option<Gatekeeper>,
    relayed: RelayedListens,
    /// Peers whose last connection closed, and when: not dialed again for [`REDIAL_COOLDOWN`]
    /// (a full peer that closed on us would otherwise be redialed every heartbeat).
    recently_closed: HashMap<PeerId, Instant>,
}

/// Peers dialed per heartbeat when fewer than the shortlist and random pool are connected.
const MAX_DIALS_PER_TICK: usize = 4;
/// How long a peer whose connection closed is not dialed from the DHT.
const REDIAL_COOLDOWN: Duration = Duration::from_secs(60);
/// Most peers remembered as recently closed.
const MAX_RECENTLY_CLOSED: usize = 1024;

/// First and longest wait before listening again through a relay whose reservation failed or ended.
const RELAY_RETRY_FIRST: Duration = Duration::from_secs(1);
const RELAY_RETRY_MAX: Duration = Duration::from_secs(60);

/// Listeners through a relay (`…/p2p-circuit` addresses from `listen`). A reservation can fail
/// (the relay is not reachable yet, or has no address to offer yet) or lapse (the relay went away);
/// the listener then closes, and the address is listened on again after a backoff that doubles up
/// to [`RELAY_RETRY_MAX`]. Bounded by the configured addresses: one entry each.
#[derive(Default)]
struct RelayedListens {
    active: HashMap<ListenerId, (Multiaddr, Duration)>,
    retry: Vec<(Instant, Multiaddr, Duration)>,
}

impl RelayedListens {
    fn listening(&mut self, id: ListenerId, addr: &Multiaddr) {
        self.listening_with(id, addr.clone(), RELAY_RETRY_FIRST);
    }

    fn listening_with(&mut self, id: ListenerId, addr: Multiaddr, backoff: Duration) {
        if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            self.active.insert(id, (addr, backoff));
        }
    }

    /// A listener closed: a relayed one is scheduled to listen again.
    fn closed(&mut self, id: ListenerId, reason: Option<String>, now: Instant) {
        if let Some((addr, backoff)) = self.active.remove(&id) {
            let reason = reason.as_deref().unwrap_or("closed");
            tracing::info!(%addr, reason, retry_in = ?backoff, "relay reservation ended");
            self.retry.push((now + backoff, addr, backoff));
        }
    }

    /// A reservation was accepted: the next failure starts the backoff afresh.
    fn accepted(&mut self, id: ListenerId) {
        if let Some((_, backoff)) = self.active.get_mut(&id) {
            *backoff = RELAY_RETRY_FIRST;
        }
    }

    /// The addresses due to be listened on again, with their next backoff.
    fn due(&mut self, now: Instant) -> Vec<(Multiaddr, Duration)> {
        let (due, wait): (Vec<_>, Vec<_>) = self.retry.drain(..).partition(|(at, ..)| *at <= now);
        self.retry = wait;
        due.into_iter()
            .map(|(_, addr, backoff)| (addr, (backoff * 2).min(RELAY_RETRY_MAX)))
            .collect()
    }
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut answers: mpsc::Receiver<InboundAnswer>,
    ) {
        let mut heartbeat = tokio::time::interval(self.cfg.heartbeat_interval);
        let mut handshake_deadlines = tokio::time::interval(membership::DEADLINE_CHECK_INTERVAL);
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
                    self.relisten_through_relays();
                    self.manage_connections();
                    self.publish_heartbeat();
                    self.cfg.metrics.peers_up.set(self.peers.up_count(Instant::now()) as i64);
                }
                _ = handshake_deadlines.tick(), if self.gate.is_some() => self.expel_overdue(),
            }
        };
        // Dropping the swarm closes every connection and listener before the shutdown is acknowledged.
        self.stream_server.abort();
        self.shard_server.abort();
        drop(self);
        if let Some(done) = ack {
            let _ = done.send(());
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Infer { peer, job, reply } => {
                let rr = &mut self.swarm.behaviour_mut().infer;
                self.outbound
                    .start((MAX_PENDING_OUTBOUND, "inference"), reply, || {
                        rr.send_request(&peer, job)
                    });
            }
            Command::FindProviders { model, reply } => {
                let mut known = self.peers.providers(&model, Instant::now(), MAX_PROVIDERS);
                known.retain(|p| self.admitted(p));
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
                    .filter(|(p, _)| self.admitted(p))
                    .map(|(p, s)| PeerSnapshot {
                        peer_id: *p,
                        addrs: s.addrs.clone(),
                        models: s.models.clone(),
                        shards: s.shards.clone(),
                        health: s.health.clone(),
                        rtt: s.rtt,
                        agent: s.agent.clone(),
                        up: self.peers.is_up(p, now),
                        load: s.load,
                        rtt_ewma: s.rtt_ewma,
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Dial { addr } => dial_addr(&mut self.swarm, addr),
            Command::DialPeer { peer } => {
                if !self.swarm.is_connected(&peer)
                    && let Err(e) = self.swarm.dial(peer)
                {
                    tracing::debug!(%peer, error = %e, "dial failed");
                }
            }
            Command::Block { peer, reply } => {
                let blocked = &mut self.swarm.behaviour_mut().blocked;
                let room = blocked.blocked_peers().len() < MAX_BLOCKED_PEERS
                    || blocked.blocked_peers().contains(&peer);
                if room {
                    blocked.block_peer(peer);
                }
                let _ = reply.send(room);
            }
            Command::Unblock { peer } => {
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            }
            Command::Publish { topic, data } => {
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(IdentTopic::new(topic), data)
                {
                    tracing::debug!(topic, error = %e, "gossip not published");
                }
            }
            Command::Validate {
                id,
                source,
                acceptance,
            } => {
                let accepted = matches!(acceptance, gossipsub::MessageAcceptance::Accept);
                self.cfg.metrics.gossip(accepted);
                self.report(&id, &source, acceptance);
            }
            Command::Sync {
                peer,
                request,
                reply,
            } => {
                let rr = &mut self.swarm.behaviour_mut().ledger_sync;
                self.sync_out.start((MAX_SYNC_STREAMS, "sync"), reply, || {
                    rr.send_request(&peer, request)
                });
            }
            Command::SyncRespond { id, response } => {
                if let Some(channel) = self.sync_in.remove(&id)
                    && self
                        .swarm
                        .behaviour_mut()
                        .ledger_sync
                        .send_response(channel, response)
                        .is_err()
                {
                    tracing::debug!("sync requester left before the answer");
                }
            }
            Command::Audit {
                peer,
                request,
                reply,
            } => {
                let rr = &mut self.swarm.behaviour_mut().audit;
                self.audit_out
                    .start((MAX_SYNC_STREAMS, "audit"), reply, || {
                        rr.send_request(&peer, request)
                    });
            }
            Command::AuditRespond { id, response } => {
                if let Some(channel) = self.audit_in.remove(&id) {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .audit
                        .send_response(channel, response);
                }
            }
            Command::Withdraw => {
                for model in self.host.model_ids() {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .stop_providing(&kad::RecordKey::new(&wire::model_key(&model)));
                }
                for ad in self.host.shard_ads() {
                    let key = wire::shard_key(&ad.model, ad.from, ad.to);
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .stop_providing(&kad::RecordKey::new(&key));
                }
            }
            Command::FindPeer { did, reply } => {
                let key = kad::RecordKey::new(&crate::peer_record::record_key(&did));
                let kad = &mut self.swarm.behaviour_mut().kad;
                let local = kad.store_mut().get(&key).and_then(|r| {
                    crate::peer_record::PeerRecord::verify(r.key.as_ref(), &r.value).ok()
                });
                if local.is_some() || self.record_lookups.len() >= MAX_PENDING_LOOKUPS {
                    let _ = reply.send(local);
                    return;
                }
                let id = kad.get_record(key);
                self.record_lookups.insert(id, reply);
            }
            Command::Provide { key, on } => {
                let key = kad::RecordKey::new(&key);
                let kad = &mut self.swarm.behaviour_mut().kad;
                if on {
                    if let Err(e) = kad.start_providing(key) {
                        tracing::warn!(error = %e, "cannot announce a DHT key");
                    }
                } else {
                    kad.stop_providing(&key);
                }
            }
            Command::AppScores { scores } => {
                let g = &mut self.swarm.behaviour_mut().gossipsub;
                for (peer, score) in scores.into_iter().take(MAX_APP_SCORES) {
                    g.set_application_score(&peer, score);
                }
            }
            Command::Revoke { revocation, reply } => {
                let _ = reply.send(self.revoke(*revocation, None));
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn publish_heartbeat(&mut self) {
        self.heartbeat_seq += 1;
        if self.heartbeat_seq % RECORD_REPUBLISH_HEARTBEATS == 1 {
            self.publish_peer_record();
        }
        let now = Instant::now();
        let generated = self.host.generated_tokens();
        let (before, at) = self
            .last_generated
            .replace((generated, now))
            .unwrap_or((generated, now));
        let secs = now.duration_since(at).as_secs_f64();
        let tok_s = if secs > 0.0 {
            ((generated - before) as f64 / secs).round() as u32
        } else {
            0
        };
        let hb = Heartbeat {
            peer_id: self.swarm.local_peer_id().to_base58(),
            models: self.host.model_ids(),
            load: u32::try_from(self.host.load()).unwrap_or(u32::MAX),
            seq: self.heartbeat_seq,
            shards: self.host.shard_ads(),
            tok_s,
            free_mem_mib: crate::heartbeat::free_memory_mib(),
            version: env!("CARGO_PKG_VERSION").into(),
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

    /// Keeps the shortlist of best peers plus a random pool connected: closes the connections
    /// beyond both, and dials a few peers the DHT knows when below them. Bootstrap peers and the
    /// relays this node listens through are never closed.
    fn manage_connections(&mut self) {
        let (shortlist, random) = self.cfg.keep_peers;
        let protected: Vec<PeerId> = self
            .cfg
            .bootstrap
            .iter()
            .chain(self.relayed.active.values().map(|(a, _)| a))
            .filter_map(|a| {
                a.iter().find_map(|p| match p {
                    Protocol::P2p(id) => Some(id),
                    _ => None,
                })
            })
            .collect();
        let now = Instant::now();
        let excess = self
            .peers
            .excess(now, shortlist, random, &protected, &mut rand::rng());
        if !excess.is_empty() {
            tracing::info!(
                closing = excess.len(),
                kept = shortlist + random,
                "too many peers"
            );
        }
        for peer in excess {
            if self.swarm.disconnect_peer_id(peer).is_ok() {
                self.cfg.metrics.peers_pruned.inc();
            }
        }
        let missing = (shortlist + random).saturating_sub(self.peers.len());
        if missing == 0 {
            return;
        }
        let mut known: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for entry in bucket.iter() {
                let peer = *entry.node.key.preimage();
                if !self.peers.contains(&peer) {
                    known.push((peer, entry.node.value.iter().cloned().collect()));
                }
            }
        }
        self.recently_closed
            .retain(|_, at| now.duration_since(*at) < REDIAL_COOLDOWN);
        known.retain(|(p, _)| !self.swarm.is_connected(p) && !self.recently_closed.contains_key(p));
        let mut rng = rand::rng();
        for _ in 0..missing.min(MAX_DIALS_PER_TICK) {
            if known.is_empty() {
                break;
            }
            let (peer, addrs) =
                known.swap_remove((rand::Rng::next_u64(&mut rng) % known.len() as u64) as usize);
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "cannot dial a DHT peer");
            }
        }
    }

    fn relisten_through_relays(&mut self) {
        for (addr, backoff) in self.relayed.due(Instant::now()) {
            match self.swarm.listen_on(addr.clone()) {
                Ok(id) => self.relayed.listening_with(id, addr, backoff),
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "cannot listen through the relay again");
                }
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.cfg.metrics.libp2p.0.record(&event);
        match event {
            SwarmEvent::NewListenAddr {
                address,
                listener_id,
            } => {
                self.relayed.accepted(listener_id);
                tracing::info!(%address, "listening");
                // A relay tells clients where it can be reached in each reservation: its own
                // (direct, specific) listen addresses.
                let direct = !address.iter().any(|p| matches!(p, Protocol::P2pCircuit))
                    && !address.iter().any(|p| match p {
                        Protocol::Ip4(ip) => ip.is_unspecified(),
                        Protocol::Ip6(ip) => ip.is_unspecified(),
                        _ => false,
                    });
                if self.cfg.relay_server && direct {
                    self.swarm.add_external_address(address.clone());
                }
                self.listen_tx.send_modify(|v| v.push(address));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let reason = reason.err().map(|e| e.to_string());
                self.relayed.closed(listener_id, reason, Instant::now());
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_tx.send_modify(|v| v.retain(|a| *a != address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                self.cfg.metrics.connections.inc();
                if num_established.get() == 1 && !self.start_handshake(peer_id) {
                    return;
                }
                if !self
                    .peers
                    .connected(peer_id, endpoint.get_remote_address().clone())
                {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                self.cfg.metrics.peers.set(self.peers.len() as i64);
                tracing::debug!(%peer_id, "connected");
                if let Some(ledger) = &self.cfg.ledger {
                    let _ = ledger.try_send(LedgerInbound::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                self.cfg.metrics.connections.dec();
                if num_established == 0 {
                    if self.recently_closed.len() < MAX_RECENTLY_CLOSED {
                        self.recently_closed.insert(peer_id, Instant::now());
                    }
                    if let Some(gate) = &mut self.gate {
                        gate.disconnected(&peer_id);
                    }
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
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            BehaviourEvent::LedgerSync(ev) => self.on_sync_event(ev),
            BehaviourEvent::Audit(ev) => self.on_audit_event(ev),
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            }) => self.on_kad_progress(id, result, step.last),
            BehaviourEvent::Kad(kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            }) => self.on_inbound_record(source, record),
            // Record filtering also hands provider records over: they are stored as they come
            // (the provider is the sending peer, set by Kademlia itself).
            BehaviourEvent::Kad(kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::AddProvider {
                        record: Some(provider),
                    },
            }) => {
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .add_provider(provider)
                {
                    tracing::debug!(error = %e, "provider record not stored");
                }
            }
            BehaviourEvent::Infer(ev) => self.on_infer_event(ev),
            BehaviourEvent::Membership(ev) => self.on_membership_event(ev),
            _ => {}
        }
    }

    fn on_gossip(&mut self, via: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        use gossipsub::MessageAcceptance::{Ignore, Reject};
        // Nothing from a peer that has not proved membership is accepted or forwarded.
        if !self.admitted(&via) {
            self.cfg.metrics.gossip(false);
            self.report(&id, &via, Ignore);
            return;
        }
        let topic = message.topic.as_str();
        if topic == membership::MEMBERSHIP_TOPIC && self.gate.is_some() {
            let verdict = self.on_revocation_gossip(via, &message.data);
            self.report(&id, &via, verdict);
            return;
        }
        if topic == wire::HEALTH_TOPIC {
            let verdict = self.on_heartbeat(&message);
            self.report(&id, &via, verdict);
            return;
        }
        // A flooding peer's ledger messages are dropped before anything is decoded or verified.
        if !self.peers.allow_gossip(&via, Instant::now()) {
            self.cfg.metrics.gossip(false);
            self.report(&id, &via, Ignore);
            return;
        }
        if topic == crate::experts::CENTROID_TOPIC {
            let verdict = self.on_centroid_update(&message);
            self.report(&id, &via, verdict);
            return;
        }
        if topic == crate::manifest::MANIFEST_TOPIC {
            let verdict = self.on_manifest(via, &message.data);
            self.report(&id, &via, verdict);
            return;
        }
        let inbound = match topic {
            ledger_wire::BLOCKS_TOPIC => LedgerInbound::Block {
                data: message.data,
                id: id.clone(),
                source: via,
            },
            ledger_wire::VOTES_TOPIC => LedgerInbound::Votes {
                data: message.data,
                id: id.clone(),
                source: via,
            },
            _ => {
                self.report(&id, &via, Reject);
                return;
            }
        };
        // The ledger reports its verdict later (Command::Validate); a node without a ledger, or one
        // whose ledger is too busy, neither forwards nor penalizes.
        let queued = self
            .cfg
            .ledger
            .as_ref()
            .is_some_and(|l| l.try_send(inbound).is_ok());
        if !queued {
            self.report(&id, &via, Ignore);
        }
    }

    fn report(
        &mut self,
        id: &gossipsub::MessageId,
        via: &PeerId,
        acceptance: gossipsub::MessageAcceptance,
    ) {
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, via, acceptance);
    }

    /// Checks a heartbeat and records it; the verdict decides whether gossipsub forwards it.
    /// A federated-router update: verified here (signer = source), then handed to the router.
    fn on_centroid_update(&mut self, message: &gossipsub::Message) -> gossipsub::MessageAcceptance {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let (Some((dim, inbox)), Some(source)) = (&self.cfg.centroids, message.source) else {
            return Ignore;
        };
        match crate::experts::CentroidUpdate::verify(&message.data, &source, *dim) {
            Ok(update) => {
                self.cfg.metrics.gossip(true);
                if inbox.try_send((source, update)).is_ok() {
                    Accept
                } else {
                    Ignore
                }
            }
            Err(e) => {
                self.cfg.metrics.gossip(false);
                tracing::debug!(%source, error = %e, "dropped an invalid centroid update");
                Reject
            }
        }
    }

    /// A model manifest: forwarded only when valid and new to this node (a known or older one is
    /// not forwarded again, so re-publications stop one hop from where they are known); an
    /// invalid one costs the forwarding peer its score.
    fn on_manifest(&mut self, via: PeerId, data: &[u8]) -> gossipsub::MessageAcceptance {
        use crate::manifest::{Offer, Received};
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let received = self.cfg.manifests.receive(data);
        self.cfg.metrics.manifest(&received);
        match received {
            Received::Valid(Offer::New) => {
                self.cfg.metrics.gossip(true);
                Accept
            }
            Received::Valid(_) => Ignore,
            Received::Invalid(e) => {
                self.cfg.metrics.gossip(false);
                tracing::debug!(%via, error = %e, "dropped an invalid model manifest");
                Reject
            }
        }
    }

    fn on_heartbeat(&mut self, message: &gossipsub::Message) -> gossipsub::MessageAcceptance {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let Some(source) = message.source else {
            self.cfg.metrics.gossip(false);
            return Reject;
        };
        let Some(hb) = Heartbeat::verify(&message.data, &source) else {
            self.cfg.metrics.gossip(false);
            tracing::debug!(%source, "dropped an invalid heartbeat");
            return Reject;
        };
        // Valid but stale (a replay) or from a peer we are not connected to: not forwarded, no penalty.
        let fresh = self.peers.heartbeat(&source, hb, Instant::now());
        self.cfg.metrics.gossip(fresh);
        if fresh {
            self.cfg.metrics.heartbeats_received.inc();
            Accept
        } else {
            Ignore
        }
    }

    fn on_sync_event(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        let Some((peer, request, channel)) = self.sync_out.on_event(event, "ledger sync") else {
            return;
        };
        let refusal = match &self.cfg.ledger {
            _ if !self.admitted(&peer) => Some("not a member of this consortium"),
            None => Some("this node keeps no ledger"),
            Some(_) if self.sync_in.len() >= MAX_SYNC_STREAMS => Some("busy"),
            Some(ledger) => {
                let id = self.next_sync_in;
                match ledger.try_send(LedgerInbound::SyncRequest { peer, id, request }) {
                    Ok(()) => {
                        self.next_sync_in += 1;
                        self.sync_in.insert(id, channel);
                        return;
                    }
                    Err(_) => Some("busy"),
                }
            }
        };
        if let Some(why) = refusal {
            let _ = self
                .swarm
                .behaviour_mut()
                .ledger_sync
                .send_response(channel, SyncResponse::Error(why.into()));
        }
    }

    fn on_audit_event(&mut self, event: request_response::Event<AuditRequest, AuditResponse>) {
        let Some((peer, request, channel)) = self.audit_out.on_event(event, "audit") else {
            return;
        };
        let refusal = match &self.cfg.audit {
            _ if !self.admitted(&peer) => "not a member of this consortium",
            None => "this node judges no audits",
            Some(_) if self.audit_in.len() >= MAX_SYNC_STREAMS => "busy",
            Some(auditor) => {
                // Shares the sync request counter: ids only need to be unique.
                let id = self.next_sync_in;
                match auditor.try_send(AuditInbound { peer, id, request }) {
                    Ok(()) => {
                        self.next_sync_in += 1;
                        self.audit_in.insert(id, channel);
                        return;
                    }
                    Err(_) => "busy",
                }
            }
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .audit
            .send_response(channel, AuditResponse::Refused(refusal.into()));
    }

    /// A peer asks this node to store a DHT record: only verified DID records, newer than the one
    /// held, are kept.
    fn on_inbound_record(&mut self, source: PeerId, record: kad::Record) {
        use crate::peer_record::PeerRecord;
        let Ok(new) = PeerRecord::verify(record.key.as_ref(), &record.value) else {
            tracing::debug!(%source, "refused an invalid DHT record");
            return;
        };
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let held = store
            .get(&record.key)
            .and_then(|r| PeerRecord::verify(r.key.as_ref(), &r.value).ok());
        if held.is_none_or(|h| h.issued_ms < new.issued_ms)
            && let Err(e) = store.put(record)
        {
            tracing::debug!(%source, error = %e, "DHT record not stored");
        }
    }

    /// Publishes this node's signed DID → PeerId record (on the first heartbeat, then every
    /// [`RECORD_REPUBLISH_HEARTBEATS`]).
    fn publish_peer_record(&mut self) {
        let me = *self.swarm.local_peer_id();
        let addrs: Vec<Multiaddr> = self
            .swarm
            .listeners()
            .map(|a| a.clone().with(libp2p::multiaddr::Protocol::P2p(me)))
            .collect();
        let record = crate::peer_record::PeerRecord::new(&self.key, &addrs);
        let key = kad::RecordKey::new(&crate::peer_record::record_key(&record.did));
        let r = kad::Record::new(key, record.sign(&self.key));
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(r, kad::Quorum::One)
        {
            tracing::debug!(error = %e, "DID record not published");
        }
    }

    fn on_kad_progress(&mut self, id: kad::QueryId, result: kad::QueryResult, last: bool) {
        if let Some(reply) = self.record_lookups.remove(&id) {
            let found = match result {
                kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(p))) => {
                    crate::peer_record::PeerRecord::verify(p.record.key.as_ref(), &p.record.value)
                        .ok()
                }
                _ => None,
            };
            if found.is_some() || last {
                let _ = reply.send(found);
                if !last && let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    q.finish();
                }
            } else {
                self.record_lookups.insert(id, reply);
            }
            return;
        }
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
                    // A connected peer that has not proved membership is no provider; one not
                    // connected yet is checked when the request dials it (wait_admitted).
                    && (self.gate.as_ref().is_none_or(|g| g.is_admitted(&p))
                        || !self.swarm.is_connected(&p))
                    && !self.swarm.behaviour().blocked.blocked_peers().contains(&p)
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
        if let Some((peer, request, channel)) = self.outbound.on_event(event, "inference") {
            self.on_inbound_job(peer, request, channel);
        }
    }

    /// Whether `peer` may be served, gossiped with and used (always, outside consortium mode).
    fn admitted(&self, peer: &PeerId) -> bool {
        self.gate.as_ref().is_none_or(|g| g.is_admitted(peer))
    }

    /// Consortium mode: presents this node's credential to a newly connected peer and starts its
    /// deadline. `false` when the peer was expelled instead (too many handshakes pending).
    fn start_handshake(&mut self, peer: PeerId) -> bool {
        let Some(gate) = &mut self.gate else {
            return true;
        };
        if !gate.connected(peer, Instant::now()) {
            self.expel(peer, "too many membership handshakes pending");
            return false;
        }
        let presentation = gate.presentation();
        if let Some(rr) = self.swarm.behaviour_mut().membership.as_mut() {
            rr.send_request(&peer, presentation);
        }
        true
    }

    /// Disconnects and blocks a peer that is not (or no longer) a member.
    fn expel(&mut self, peer: PeerId, why: &str) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        tracing::info!(%peer, reason = why, "expelling a peer from the consortium");
        if let Some(gate) = &mut self.gate {
            gate.disconnected(&peer);
        }
        let blocked = &mut self.swarm.behaviour_mut().blocked;
        if blocked.blocked_peers().len() < MAX_BLOCKED_PEERS {
            // Blocking also closes every connection to it.
            blocked.block_peer(peer);
        } else {
            tracing::warn!(%peer, "block list full: disconnecting without blocking");
        }
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn expel_overdue(&mut self) {
        let late = match &mut self.gate {
            Some(gate) => gate.overdue(Instant::now()),
            None => return,
        };
        for peer in late {
            self.expel(peer, "no valid membership credential before the deadline");
        }
    }

    fn on_membership_event(
        &mut self,
        event: request_response::Event<Presentation, HandshakeResponse>,
    ) {
        use request_response::{Event, Message, OutboundFailure};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let Some(gate) = &mut self.gate else {
                    return;
                };
                let verdict =
                    gate.presented(peer, &request.credential, time::OffsetDateTime::now_utc());
                let response = match &verdict {
                    Verdict::Admit => HandshakeResponse::Accepted,
                    Verdict::Expel(why) => HandshakeResponse::Refused(why.clone()),
                };
                if let Some(rr) = self.swarm.behaviour_mut().membership.as_mut() {
                    let _ = rr.send_response(channel, response);
                }
                match verdict {
                    Verdict::Admit => {
                        tracing::debug!(%peer, "peer proved its consortium membership");
                        if let Some(ledger) = &self.cfg.ledger {
                            // Sync with it now that it may be talked to.
                            let _ = ledger.try_send(LedgerInbound::PeerConnected(peer));
                        }
                    }
                    // Expelled once the refusal had a chance to go out (the block closes the
                    // connection); a peer that ignores it is cut off here anyway.
                    Verdict::Expel(why) => self.expel(peer, &why),
                }
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        response: HandshakeResponse::Refused(why),
                        ..
                    },
                ..
            } => {
                tracing::warn!(%peer, reason = %why, "a peer refused this node's membership credential");
            }
            Event::Message { .. } | Event::ResponseSent { .. } => {}
            Event::OutboundFailure {
                peer,
                error: OutboundFailure::UnsupportedProtocols,
                ..
            } => {
                if let Some(Verdict::Expel(why)) =
                    self.gate.as_mut().and_then(|g| g.cannot_present(&peer))
                {
                    self.expel(peer, &why);
                }
            }
            Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "membership presentation failed");
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound membership presentation failed");
            }
        }
    }

    /// A revocation on the membership topic: accepted (and forwarded) only when new and signed by a
    /// trusted issuer for this consortium.
    fn on_revocation_gossip(&mut self, via: PeerId, data: &[u8]) -> gossipsub::MessageAcceptance {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let revocation = match mycel_identity::revocation::Revocation::from_json(data) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%via, error = %e, "dropped an invalid revocation");
                self.cfg.metrics.gossip(false);
                return Reject;
            }
        };
        match self.revoke(revocation, Some(via)) {
            Ok(true) => {
                self.cfg.metrics.gossip(true);
                Accept
            }
            Ok(false) => Ignore,
            Err(e) => {
                tracing::debug!(%via, error = %e, "refused a revocation");
                self.cfg.metrics.gossip(false);
                Reject
            }
        }
    }

    /// Applies a revocation; publishes it when it is new and came from the local node (`via` None).
    fn revoke(
        &mut self,
        revocation: mycel_identity::revocation::Revocation,
        via: Option<PeerId>,
    ) -> std::result::Result<bool, String> {
        let Some(gate) = &mut self.gate else {
            return Err("this node is not in consortium mode".into());
        };
        let json = revocation.to_json();
        let subject = revocation.subject;
        let Some(peer) = gate.revoke(revocation)? else {
            return Ok(false);
        };
        if peer == *self.swarm.local_peer_id() {
            tracing::error!("this node's own consortium membership was revoked");
        } else {
            self.expel(peer, &format!("membership of {subject} revoked"));
        }
        if via.is_none()
            && let Err(e) = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(IdentTopic::new(membership::MEMBERSHIP_TOPIC), json)
        {
            tracing::warn!(error = %e, "revocation applied here but not gossiped");
        }
        Ok(true)
    }

    fn on_inbound_job(
        &mut self,
        peer: PeerId,
        job: ChatJob,
        channel: ResponseChannel<InferResponse>,
    ) {
        let refuse = |code, message: String| InferResponse::Error { code, message };
        let early = if !self.admitted(&peer) {
            Some(refuse(
                InferErrorCode::InvalidRequest,
                "not a member of this consortium".into(),
            ))
        } else if let Err(e) = job.validate() {
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
                Ok(Err(NodeError::InvalidRequest(m))) => refuse(InferErrorCode::InvalidRequest, m),
                Ok(Err(e)) => refuse(InferErrorCode::Failed, e.to_string()),
                Err(_) => refuse(InferErrorCode::Failed, "deadline exceeded".into()),
            };
            let _ = answers.send((channel, resp)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_relayed_listener_is_retried_with_a_doubling_backoff() {
        let mut relayed = RelayedListens::default();
        let circuit: Multiaddr = "/ip4/127.0.0.1/tcp/1/p2p-circuit".parse().expect("addr");
        let direct: Multiaddr = "/ip4/127.0.0.1/tcp/2".parse().expect("addr");
        let (a, b, c) = (ListenerId::next(), ListenerId::next(), ListenerId::next());
        relayed.listening(a, &circuit);
        relayed.listening(b, &direct);
        let t0 = Instant::now();
        relayed.closed(b, None, t0);
        relayed.closed(a, Some("no addresses".into()), t0);
        assert!(relayed.due(t0).is_empty(), "retried before its backoff");
        let due = relayed.due(t0 + RELAY_RETRY_FIRST);
        assert_eq!(due, vec![(circuit.clone(), RELAY_RETRY_FIRST * 2)]);
        // Failing again keeps doubling up to the cap; an accepted reservation starts afresh.
        relayed.listening_with(c, circuit.clone(), RELAY_RETRY_MAX);
        relayed.closed(c, None, t0);
        let due = relayed.due(t0 + RELAY_RETRY_MAX);
        assert_eq!(due, vec![(circuit.clone(), RELAY_RETRY_MAX)]);
        relayed.listening_with(c, circuit, RELAY_RETRY_MAX);
        relayed.accepted(c);
        relayed.closed(c, None, t0);
        assert!(relayed.due(t0 + RELAY_RETRY_FIRST).len() == 1);
    }
}
