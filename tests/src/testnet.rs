//! [`TestNet`]: N real mycel nodes in one process, on loopback, each with its own key and data
//! directory, started, killed, stopped, restarted, partitioned and slowed down by a test.
//!
//! Each node runs on its own single-worker tokio runtime. That makes [`TestNet::kill`] abrupt the
//! way a crash is: the runtime is shut down and every task of the node (swarm, HTTP server, running
//! generations' relays) is dropped at once, so its sockets close without any goodbye, exactly as the
//! kernel closes a dead process's sockets. [`TestNet::stop`] is the clean path
//! ([`RunningNode::shutdown`]). The harness talks to nodes through their real interfaces: HTTP
//! ([`crate::client`]) and the node's network handle.
//!
//! Providers serve the built-in `tiny` random-weight model. Its weights depend only on a fixed seed,
//! so the harness loads it once and every provider shares the same `Arc` (memory stays flat with
//! the node count; each generation still gets its own session). With more than a handful of nodes,
//! run the process with `CANDLE_NUM_THREADS=1` ([`crate::process`] explains why).
//!
//! Partitions use the node's peer block list (`NetworkHandle::block_peer`); link delay is emulated
//! by a loopback TCP relay ([`crate::delay`]), since the node has no transport-level delay knob.
//!
//! With [`NetOptions::ledger`] every node keeps a real ledger (`ledger.redb` in its data directory,
//! reopened by [`TestNet::restart`]) under one genesis the harness writes before the first node
//! starts: the initial nodes' accounts (staked as [`LedgerSetup::stakers`] says) and a funded wallet
//! whose key the harness keeps ([`TestNet::wallet_key`]). Nodes added later join that genesis with an
//! account it does not know: they sync and relay, they do not vote.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use mycel_identity::{Did, Keypair, PeerId};
use mycel_ledger::{AccountId, Block, BlockHash, Credits, Genesis, GenesisAccount, Params};
use mycel_models::ChatModel;
use mycel_node::config::{Config, TINY_MODEL_ID, ledger_file, models_dir};
use mycel_node::devnet::{NODE_BALANCE, NODE_STAKE, WALLET_BALANCE};
use mycel_node::ledger::LedgerOptions;
use mycel_node::network::PeerSnapshot;
use mycel_node::{NodeError, RunningNode, StartOptions, models, node_key};
use mycel_rpc_api::ledger::{BlockView, LedgerInfo, SubmitResult};
use serde_json::Value;

use crate::client::{self, Api, ChatQuery, HttpReply, Outcome};
use crate::delay::DelayProxy;
use crate::error::{Error, Result};
use crate::ledger;
use crate::rng::SimRng;

/// How often `wait_*` helpers look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Blocking threads per node runtime (generation runs on them; a node runs at most
/// `max_concurrent_generations` at once, the rest is headroom for short blocking calls).
const NODE_BLOCKING_THREADS: usize = 8;
/// Name of the node info file the harness asks each node to write into its data directory.
pub const NODE_INFO_FILE: &str = "node.json";
/// Network name of a TestNet genesis.
pub const NETWORK: &str = "mycel-testnet";
/// How long a restart keeps trying while the killed node's ledger thread still holds its file (it
/// closes it moments after the kill, once its current write is done).
const LEDGER_REOPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Serves the `tiny` model.
    Provider,
    /// Serves nothing; forwards queries to providers over libp2p.
    Forwarder,
}

/// Which running nodes a starting node dials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Every live node (a full mesh).
    Full,
    /// Up to `peers` live nodes picked at random (seeded); the DHT finds the rest.
    Random {
        /// How many.
        peers: usize,
    },
    /// None: the test connects nodes itself ([`TestNet::connect`], [`TestNet::delay_link`]).
    Isolated,
}

impl Topology {
    /// Up peers every node should reach once connected, in a net of `live` nodes.
    fn degree(self, live: usize) -> usize {
        let others = live.saturating_sub(1);
        match self {
            Topology::Full => others,
            Topology::Random { peers } => peers.min(others),
            Topology::Isolated => 0,
        }
    }
}

/// How a [`TestNet`] is built.
#[derive(Clone, Debug)]
pub struct NetOptions {
    /// Of the `n` nodes of [`TestNet::start`], how many are forwarders (the last ones); the rest
    /// are providers.
    pub forwarders: usize,
    /// Which nodes a starting node dials.
    pub topology: Topology,
    /// Configuration template of every node; the harness fills in `bootstrap`. Default:
    /// [`Config::loopback`] (ephemeral loopback ports, no mDNS, 1 s heartbeats).
    pub config: Config,
    /// Seed of the random choices the harness makes (bootstrap peers, the genesis seed).
    pub seed: u64,
    /// The ledger every node keeps (default: none, the nodes refuse `ledger_*` requests).
    pub ledger: Option<LedgerSetup>,
}

impl Default for NetOptions {
    fn default() -> Self {
        Self {
            forwarders: 0,
            topology: Topology::Full,
            config: Config::loopback(Vec::new()),
            seed: 0x6d79_6365_6c00,
            ledger: None,
        }
    }
}

/// Which nodes of [`TestNet::start`] hold stake in the genesis, and so vote. A block confirms once
/// votes of 2/3 of that stake arrived: a test that takes stakers down stalls confirmation, so one
/// that churns nodes stakes only a core it keeps running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stakers {
    /// Every node of [`TestNet::start`].
    All,
    /// Only its forwarders.
    Forwarders,
}

/// The genesis and ledger settings of a [`TestNet`] whose nodes keep a ledger.
#[derive(Clone, Debug)]
pub struct LedgerSetup {
    /// Which initial nodes are staked; the others are genesis accounts without stake. Default: all.
    pub stakers: Stakers,
    /// Stake of each staked node. Default: the devnet's 1000 credits.
    pub stake: Credits,
    /// Liquid balance of each initial node. A forwarder that holds credits pays the providers of
    /// the jobs it forwards (an escrow per job, then a receipt and a claim); one with none sends
    /// its jobs unpaid. Default: the devnet's 100 credits.
    pub node_balance: Credits,
    /// Liquid balance of the harness wallet ([`TestNet::wallet_key`]). Default: the devnet's
    /// 10 000 credits.
    pub wallet_balance: Credits,
    /// Ledger duty period of every node (vote rebroadcast, checkpoint duty, sync with one peer).
    /// Default: `Config::loopback`'s `ledger_tick_ms` (500 ms).
    pub tick: Duration,
}

impl Default for LedgerSetup {
    fn default() -> Self {
        Self {
            stakers: Stakers::All,
            stake: Credits::whole(NODE_STAKE),
            node_balance: Credits::whole(NODE_BALANCE),
            wallet_balance: Credits::whole(WALLET_BALANCE),
            tick: Duration::from_millis(Config::loopback(Vec::new()).ledger_tick_ms),
        }
    }
}

/// The ledger of a running TestNet: its genesis, the wallet key and the duty period.
struct NetLedger {
    genesis: Genesis,
    wallet: Keypair,
    tick: Duration,
}

/// What every live forwarder sees of the providers at one moment.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Coverage {
    /// Providers running now.
    pub live_providers: usize,
    /// Forwarders running now.
    pub forwarders: usize,
    /// Fewest live providers any forwarder sees up (heartbeat current); `live_providers` when
    /// there is no forwarder.
    pub min_seen: usize,
    /// Mean over forwarders of (live providers seen up) / (live providers); 1 when there are none.
    pub mean_seen_fraction: f64,
    /// The replica target the sample was taken against.
    pub replicas: usize,
    /// Whether every forwarder sees at least `replicas` live providers up (so there are that many).
    pub full: bool,
}

/// A node's runtime and handle while it runs.
struct Live {
    node: Option<RunningNode>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Live {
    fn drop(&mut self) {
        // Drops every task of the node without waiting; allowed inside an async context.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

struct Slot {
    role: Role,
    dir: tempfile::TempDir,
    peer_id: PeerId,
    did: Did,
    account: AccountId,
    live: Option<Live>,
    starts: u32,
}

/// N real nodes in one process on loopback. See the module docs.
pub struct TestNet {
    slots: Vec<Slot>,
    opts: NetOptions,
    tiny: Arc<ChatModel>,
    rng: SimRng,
    relays: Vec<DelayProxy>,
    ledger: Option<NetLedger>,
}

impl std::fmt::Debug for TestNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNet")
            .field("nodes", &self.slots.len())
            .field("live", &self.live().len())
            .field("topology", &self.opts.topology)
            .finish()
    }
}

impl TestNet {
    /// Starts `n` nodes one after another: the first `n - opts.forwarders` serve `tiny`, the rest
    /// forward. Each dials the nodes already running, as `opts.topology` says. With
    /// `opts.ledger`, every node's key is made first and the genesis names them all (see the
    /// module docs).
    pub async fn start(n: usize, opts: NetOptions) -> Result<Self> {
        if opts.forwarders > n {
            return Err(Error::Invalid(format!(
                "{} forwarders asked of a {n}-node net",
                opts.forwarders
            )));
        }
        let scratch = tempfile::tempdir().map_err(|e| Error::io("temp dir", e))?;
        let cache = models_dir(scratch.path());
        let tiny = tokio::task::spawn_blocking(move || models::load(TINY_MODEL_ID, &cache, |_| {}))
            .await
            .map_err(|e| Error::Invalid(format!("loading tiny panicked: {e}")))?
            .map_err(|source| Error::Node { index: 0, source })?;
        let mut net = Self {
            slots: Vec::with_capacity(n),
            rng: SimRng::new(opts.seed),
            opts,
            tiny: Arc::new(tiny),
            relays: Vec::new(),
            ledger: None,
        };
        let providers = n - net.opts.forwarders;
        for i in 0..n {
            let role = if i < providers {
                Role::Provider
            } else {
                Role::Forwarder
            };
            net.new_slot(role)?;
        }
        if let Some(setup) = net.opts.ledger.clone() {
            net.ledger = Some(net.make_genesis(&setup)?);
        }
        for i in 0..n {
            net.launch(i).await?;
        }
        Ok(net)
    }

    /// The genesis of the initial nodes (see [`LedgerSetup`]) and a funded wallet.
    fn make_genesis(&mut self, setup: &LedgerSetup) -> Result<NetLedger> {
        let wallet = Keypair::generate();
        let mut accounts: Vec<GenesisAccount> = self
            .slots
            .iter()
            .map(|s| GenesisAccount {
                account: s.account.0,
                balance: setup.node_balance,
                stake: match (setup.stakers, s.role) {
                    (Stakers::All, _) | (Stakers::Forwarders, Role::Forwarder) => setup.stake,
                    (Stakers::Forwarders, Role::Provider) => Credits::ZERO,
                },
            })
            .collect();
        accounts.push(GenesisAccount {
            account: *wallet.public().as_bytes(),
            balance: setup.wallet_balance,
            stake: Credits::ZERO,
        });
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| Error::Invalid(format!("the clock is before 1970: {e}")))?
            .as_secs();
        let genesis = Genesis {
            network: NETWORK.into(),
            seed,
            // Epoch 0 has begun when the first node starts.
            start_time: now.saturating_sub(1),
            accounts,
            params: Params {
                // Nothing here opens an account by work; keep the check cheap if a test does.
                open_work_bits: 8,
                ..Params::default()
            },
        };
        genesis
            .validate()
            .map_err(|e| Error::Invalid(format!("TestNet genesis: {e}")))?;
        Ok(NetLedger {
            genesis,
            wallet,
            tick: setup.tick,
        })
    }

    /// Adds and starts a fresh node (new key, new data directory); returns its index. In a net
    /// with a ledger it joins the genesis with an account the genesis does not know (no stake).
    pub async fn add_node(&mut self, role: Role) -> Result<usize> {
        let index = self.new_slot(role)?;
        self.launch(index).await?;
        Ok(index)
    }

    /// A slot with a fresh key and data directory, not started.
    fn new_slot(&mut self, role: Role) -> Result<usize> {
        let index = self.slots.len();
        let dir = tempfile::Builder::new()
            .prefix("mycel-testnet-")
            .tempdir()
            .map_err(|e| Error::io("temp dir", e))?;
        let (key, _) =
            node_key::load_or_create(dir.path()).map_err(|source| Error::Node { index, source })?;
        self.slots.push(Slot {
            role,
            dir,
            peer_id: key.peer_id(),
            did: Did::from_public_key(key.public()),
            account: AccountId::from_public_key(&key.public()),
            live: None,
            starts: 0,
        });
        Ok(index)
    }

    /// Kills node `i` abruptly: its runtime is dropped with every task, no shutdown runs.
    pub async fn kill(&mut self, i: usize) -> Result<()> {
        let slot = self.slot_mut(i)?;
        let live = slot.live.take().ok_or(Error::NotRunning(i))?;
        drop(live);
        Ok(())
    }

    /// Stops node `i` cleanly ([`RunningNode::shutdown`]) and waits for it.
    pub async fn stop(&mut self, i: usize) -> Result<()> {
        let slot = self.slot_mut(i)?;
        let mut live = slot.live.take().ok_or(Error::NotRunning(i))?;
        if let (Some(node), Some(rt)) = (live.node.take(), live.rt.as_ref()) {
            let _ = rt.spawn(node.shutdown()).await;
        }
        drop(live);
        Ok(())
    }

    /// Starts a killed or stopped node again with the same key and data directory (new ports); with
    /// a ledger, it reopens the same `ledger.redb`.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        if self.slot(i)?.live.is_some() {
            return Err(Error::AlreadyRunning(i));
        }
        self.launch(i).await
    }

    /// Stops every running node cleanly.
    pub async fn shutdown(mut self) {
        for i in self.live() {
            let _ = self.stop(i).await;
        }
    }

    async fn launch(&mut self, i: usize) -> Result<()> {
        let live_now: Vec<usize> = self.live().into_iter().filter(|&j| j != i).collect();
        let targets = match self.opts.topology {
            Topology::Full => live_now,
            Topology::Random { peers } => self.rng.choose(&live_now, peers),
            Topology::Isolated => Vec::new(),
        };
        let mut bootstrap = Vec::new();
        for j in targets {
            if let Some(addr) = self.node(j)?.node.listen_addrs().first() {
                bootstrap.push(addr.to_string());
            }
        }
        let mut config = self.opts.config.clone();
        config.bootstrap = bootstrap;
        let restarting = self.slot(i)?.starts > 0;
        let started = Instant::now();
        let live = loop {
            match self.start_node(i, config.clone()).await {
                // The killed incarnation's ledger thread may still hold the file for a moment.
                Err(Error::Node {
                    source: NodeError::Ledger(_),
                    ..
                }) if restarting && started.elapsed() < LEDGER_REOPEN_TIMEOUT => {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                other => break other?,
            }
        };
        let slot = self.slot_mut(i)?;
        slot.live = Some(live);
        slot.starts += 1;
        Ok(())
    }

    /// Starts node `i` once on a runtime of its own.
    async fn start_node(&self, i: usize, config: Config) -> Result<Live> {
        let slot = self.slot(i)?;
        let key = node_key::load_or_create(slot.dir.path())
            .map_err(|source| Error::Node { index: i, source })?
            .0;
        let mut models = std::collections::BTreeMap::new();
        if slot.role == Role::Provider {
            models.insert(TINY_MODEL_ID.to_string(), self.tiny.clone());
        }
        let opts = StartOptions {
            shards: Default::default(),
            models_dir: None,
            key,
            config,
            models,
            info_file: Some(slot.dir.path().join(NODE_INFO_FILE)),
            ledger: self.ledger.as_ref().map(|l| LedgerOptions {
                genesis: l.genesis.clone(),
                path: ledger_file(slot.dir.path()),
                tick: l.tick,
            }),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(NODE_BLOCKING_THREADS)
            .thread_name(format!("node-{i}"))
            .enable_all()
            .build()
            .map_err(|e| Error::io("node runtime", e))?;
        let started = rt
            .spawn(RunningNode::start(opts))
            .await
            .map_err(|e| Error::Invalid(format!("node {i} start panicked: {e}")));
        match started {
            Ok(Ok(node)) => Ok(Live {
                node: Some(node),
                rt: Some(rt),
            }),
            Ok(Err(source)) => {
                rt.shutdown_background();
                Err(Error::Node { index: i, source })
            }
            Err(e) => {
                rt.shutdown_background();
                Err(e)
            }
        }
    }

    fn slot(&self, i: usize) -> Result<&Slot> {
        self.slots.get(i).ok_or(Error::NoSuchNode(i))
    }

    fn slot_mut(&mut self, i: usize) -> Result<&mut Slot> {
        self.slots.get_mut(i).ok_or(Error::NoSuchNode(i))
    }

    /// Nodes ever added (running or not).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no node was ever added.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Indices of the running nodes.
    pub fn live(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].live.is_some())
            .collect()
    }

    /// Indices of the running nodes with `role`.
    pub fn live_with(&self, role: Role) -> Vec<usize> {
        self.live()
            .into_iter()
            .filter(|&i| self.slots[i].role == role)
            .collect()
    }

    /// Whether node `i` runs.
    pub fn is_live(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.live.is_some())
    }

    /// The running node `i`.
    pub fn node(&self, i: usize) -> Result<&RunningNode> {
        self.slot(i)?
            .live
            .as_ref()
            .and_then(|l| l.node.as_ref())
            .ok_or(Error::NotRunning(i))
    }

    /// Node `i`'s role.
    pub fn role(&self, i: usize) -> Result<Role> {
        Ok(self.slot(i)?.role)
    }

    /// Node `i`'s PeerId (stable across restarts).
    pub fn peer_id(&self, i: usize) -> Result<PeerId> {
        Ok(self.slot(i)?.peer_id)
    }

    /// Node `i`'s DID (stable across restarts).
    pub fn did(&self, i: usize) -> Result<&Did> {
        Ok(&self.slot(i)?.did)
    }

    /// Node `i`'s ledger account (its node key; stable across restarts).
    pub fn account(&self, i: usize) -> Result<AccountId> {
        Ok(self.slot(i)?.account)
    }

    /// The genesis every node keeps, when the net has a ledger.
    pub fn genesis(&self) -> Option<&Genesis> {
        self.ledger.as_ref().map(|l| &l.genesis)
    }

    /// The key of the wallet the genesis funds, when the net has a ledger.
    pub fn wallet_key(&self) -> Option<&Keypair> {
        self.ledger.as_ref().map(|l| &l.wallet)
    }

    /// The index of the node with this DID (as a string, as APIs return it).
    pub fn index_of_did(&self, did: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.did.to_string() == did)
    }

    /// Node `i`'s data directory (kept across restarts, removed with the TestNet).
    pub fn data_dir(&self, i: usize) -> Result<&Path> {
        Ok(self.slot(i)?.dir.path())
    }

    /// How many times node `i` was started.
    pub fn starts(&self, i: usize) -> Result<u32> {
        Ok(self.slot(i)?.starts)
    }

    /// Where node `i`'s HTTP API listens.
    pub fn http_addr(&self, i: usize) -> Result<SocketAddr> {
        Ok(self.node(i)?.http_addr)
    }

    /// `http://<node i>{path}`.
    pub fn url(&self, i: usize, path: &str) -> Result<String> {
        Ok(format!("http://{}{path}", self.http_addr(i)?))
    }

    /// The first listen multiaddr of node `i`, with `/p2p/<PeerId>`.
    pub fn p2p_addr(&self, i: usize) -> Result<Multiaddr> {
        self.node(i)?
            .node
            .listen_addrs()
            .into_iter()
            .next()
            .ok_or_else(|| Error::Invalid(format!("node {i} has no listen address")))
    }

    /// Peers node `i` is connected to, as its network actor sees them.
    pub async fn peers(&self, i: usize) -> Result<Vec<PeerSnapshot>> {
        self.node(i)?
            .node
            .network()
            .peers()
            .await
            .map_err(|source| Error::Node { index: i, source })
    }

    /// Indices of the live nodes that node `i` is connected to.
    pub async fn connected_to(&self, i: usize) -> Result<Vec<usize>> {
        let peers = self.peers(i).await?;
        Ok(self
            .live()
            .into_iter()
            .filter(|&j| peers.iter().any(|p| p.peer_id == self.slots[j].peer_id))
            .collect())
    }

    /// Live providers that node `i` sees up (connected, heartbeat current, listing `tiny`).
    pub async fn providers_seen(&self, i: usize) -> Result<Vec<usize>> {
        let peers = self.peers(i).await?;
        Ok(self
            .live_with(Role::Provider)
            .into_iter()
            .filter(|&j| {
                peers.iter().any(|p| {
                    p.peer_id == self.slots[j].peer_id
                        && p.up
                        && p.models.iter().any(|m| m == TINY_MODEL_ID)
                })
            })
            .collect())
    }

    /// What the live forwarders see of the live providers now, against a target of `replicas`.
    pub async fn coverage(&self, replicas: usize) -> Result<Coverage> {
        let providers = self.live_with(Role::Provider).len();
        let forwarders = self.live_with(Role::Forwarder);
        let mut min_seen = providers;
        let mut fraction_sum = 0.0;
        for &f in &forwarders {
            let seen = self.providers_seen(f).await?.len();
            min_seen = min_seen.min(seen);
            fraction_sum += if providers == 0 {
                1.0
            } else {
                seen as f64 / providers as f64
            };
        }
        Ok(Coverage {
            live_providers: providers,
            forwarders: forwarders.len(),
            min_seen,
            mean_seen_fraction: if forwarders.is_empty() {
                1.0
            } else {
                fraction_sum / forwarders.len() as f64
            },
            replicas,
            full: min_seen >= replicas,
        })
    }

    /// Polls `condition` every [`POLL_INTERVAL`] until it holds; [`Error::Timeout`] naming `what`
    /// after `timeout`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl AsyncFnMut(&TestNet) -> bool,
    ) -> Result<Duration> {
        let started = Instant::now();
        loop {
            if condition(self).await {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: what.to_string(),
                    secs: timeout.as_secs_f64(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until every live node sees as many peers up (connected, heartbeat current) as the
    /// topology promises: all others for [`Topology::Full`], `min(peers, others)` for
    /// [`Topology::Random`], none for [`Topology::Isolated`].
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Duration> {
        let what = format!("every node to see {:?} peers up", self.opts.topology);
        self.wait_until(&what, timeout, async |net: &TestNet| {
            let need = net.opts.topology.degree(net.live().len());
            for i in net.live() {
                match net.peers(i).await {
                    Ok(p) if p.iter().filter(|p| p.up).count() >= need => {}
                    _ => return false,
                }
            }
            true
        })
        .await
    }

    /// Waits until every live forwarder sees at least `replicas` live providers up.
    pub async fn wait_covered(&self, replicas: usize, timeout: Duration) -> Result<Duration> {
        let what = format!("every forwarder to see {replicas} providers up");
        self.wait_until(&what, timeout, async |net: &TestNet| {
            net.coverage(replicas).await.is_ok_and(|c| c.full)
        })
        .await
    }

    /// Makes node `a` dial node `b`.
    pub async fn connect(&self, a: usize, b: usize) -> Result<()> {
        let addr = self.p2p_addr(b)?;
        self.node(a)?
            .node
            .network()
            .dial(addr)
            .await
            .map_err(|source| Error::Node { index: a, source })
    }

    /// Cuts every link between `side_a` and `side_b`: each node blocks every node of the other
    /// side, which closes their connections and refuses new ones (both directions).
    pub async fn partition(&self, side_a: &[usize], side_b: &[usize]) -> Result<()> {
        for &a in side_a {
            for &b in side_b {
                self.block(a, b).await?;
                self.block(b, a).await?;
            }
        }
        Ok(())
    }

    /// Lifts a [`Self::partition`] and redials across it (the node has no reconnect loop of its own;
    /// a restarted network link would see the same redial from the peers' bootstrap logic).
    pub async fn heal(&self, side_a: &[usize], side_b: &[usize]) -> Result<()> {
        for &a in side_a {
            for &b in side_b {
                self.unblock(a, b).await?;
                self.unblock(b, a).await?;
            }
        }
        for &a in side_a {
            for &b in side_b {
                self.connect(a, b).await?;
            }
        }
        Ok(())
    }

    async fn block(&self, a: usize, b: usize) -> Result<()> {
        let peer = self.peer_id(b)?;
        let done = self
            .node(a)?
            .node
            .network()
            .block_peer(peer)
            .await
            .map_err(|source| Error::Node { index: a, source })?;
        if !done {
            return Err(Error::Invalid(format!("node {a}'s block list is full")));
        }
        Ok(())
    }

    async fn unblock(&self, a: usize, b: usize) -> Result<()> {
        let peer = self.peer_id(b)?;
        self.node(a)?
            .node
            .network()
            .unblock_peer(peer)
            .await
            .map_err(|source| Error::Node { index: a, source })
    }

    /// Connects `from` to `to` through a [`DelayProxy`] that holds every byte for `delay` each way
    /// (a ping round trip over that link grows by `2 × delay`). The relay lives as long as the
    /// TestNet. Only this connection is slowed: use [`Topology::Isolated`] so the two nodes do not
    /// also connect directly.
    pub async fn delay_link(&mut self, from: usize, to: usize, delay: Duration) -> Result<()> {
        let target = tcp_socket_addr(&self.p2p_addr(to)?)
            .ok_or_else(|| Error::Invalid(format!("node {to} has no loopback TCP address")))?;
        let relay = DelayProxy::start(target, delay).await?;
        let via: Multiaddr = Multiaddr::from(relay.addr().ip())
            .with(Protocol::Tcp(relay.addr().port()))
            .with(Protocol::P2p(self.peer_id(to)?));
        self.relays.push(relay);
        self.node(from)?
            .node
            .network()
            .dial(via)
            .await
            .map_err(|source| Error::Node {
                index: from,
                source,
            })
    }

    /// A short `tiny` question; the seed is cut to 63 bits (OpenAI's `seed` is a signed integer).
    pub fn tiny_query(prompt: &str, seed: u64) -> ChatQuery {
        ChatQuery::new(TINY_MODEL_ID, prompt, 16, seed >> 1)
    }

    /// Asks node `i` through `api`.
    pub async fn ask(
        &self,
        i: usize,
        api: Api,
        query: &ChatQuery,
        timeout: Duration,
    ) -> Result<Outcome> {
        Ok(client::ask(api, self.http_addr(i)?, query, timeout).await)
    }

    /// `GET` on node `i`'s HTTP API.
    pub async fn get(&self, i: usize, path: &str) -> Result<HttpReply> {
        client::get(self.http_addr(i)?, path).await
    }

    /// `POST` JSON to node `i`'s HTTP API.
    pub async fn post_json(&self, i: usize, path: &str, body: &Value) -> Result<HttpReply> {
        client::post_json(self.http_addr(i)?, path, body).await
    }

    /// Calls a JSON-RPC method of node `i` over HTTP.
    pub async fn rpc(&self, i: usize, method: &str, params: Value) -> Result<Value> {
        client::rpc_call(self.http_addr(i)?, method, params).await
    }

    /// `ledger_info` of node `i`.
    pub async fn ledger_info(&self, i: usize) -> Result<LedgerInfo> {
        ledger::info(self.http_addr(i)?).await
    }

    /// `ledger_block` of node `i` (`None`: it does not hold the block).
    pub async fn ledger_block(&self, i: usize, hash: &BlockHash) -> Result<Option<BlockView>> {
        ledger::block(self.http_addr(i)?, hash).await
    }

    /// `ledger_submit` of `block` through node `i`.
    pub async fn ledger_submit(&self, i: usize, block: &Block) -> Result<SubmitResult> {
        ledger::submit(self.http_addr(i)?, block).await
    }
}

/// `127.0.0.1:port` from `/ip4/127.0.0.1/tcp/port/...`.
fn tcp_socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Tcp(port) => return ip.map(|ip| SocketAddr::new(ip, port)),
            _ => {}
        }
    }
    None
}
