//! The ledger as the harness sees it, through the nodes' `ledger_*` JSON-RPC (specs/rpc.md): typed
//! calls, the harness wallet ([`SimWallet`]), wallet traffic through random live nodes
//! ([`send_loop`]), and the agreement checks of the simulations: whether every live node holds the
//! same state root ([`compare_roots`]), and whether every block some node reported confirmed is held
//! confirmed by every live node ([`check_blocks`]).
//!
//! The wallet builds its blocks offline from its own chain head, as a real wallet does
//! (`mycel_ledger::Wallet::build` with the epoch of `ledger_info`), and never signs two blocks at
//! one height: a block whose submission failed is submitted again, never replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_identity::Keypair;
use mycel_ledger::{AccountId, Block, BlockBody, BlockHash, ChainView, Credits, Genesis, Wallet};
use mycel_rpc_api::ledger::{BlockView, LedgerInfo, SubmitResult};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{Mutex, RwLock, watch};

use crate::client;
use crate::error::{Error, Result};
use crate::rng::SimRng;
use crate::testnet::TestNet;

/// Most blocks of the wallet's chain one `ledger_history` call returns (the node's cap), and so
/// the most sends one traffic run makes (the checks read the whole chain in one call).
pub const MAX_SENDS: usize = 1000;
/// How often the traffic polls for a confirmation.
const CONFIRM_POLL: Duration = Duration::from_millis(50);
/// How often the checks look again while they wait for agreement.
const CHECK_POLL: Duration = Duration::from_millis(250);
/// Submission attempts of one block (each through a live node picked at random) before the
/// traffic gives up: its chain head is then unknown, so it stops.
const MAX_SUBMIT_ATTEMPTS: u32 = 20;
/// Recipients the wallet sends to in turn (fresh accounts that never open).
const RECIPIENTS: usize = 4;
/// Examples of disagreement quoted in a report.
const MAX_EXAMPLES: usize = 10;

fn decode<T: DeserializeOwned>(addr: SocketAddr, method: &str, v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Protocol {
        url: format!("http://{addr}/ {method}"),
        message: e.to_string(),
    })
}

/// `ledger_info` of the node at `addr`.
pub async fn info(addr: SocketAddr) -> Result<LedgerInfo> {
    let v = client::rpc_call(addr, "ledger_info", json!([])).await?;
    decode(addr, "ledger_info", v)
}

/// `ledger_block` of the node at `addr` (`None`: it does not hold the block).
pub async fn block(addr: SocketAddr, hash: &BlockHash) -> Result<Option<BlockView>> {
    let v = client::rpc_call(addr, "ledger_block", json!([hash.to_hex()])).await?;
    decode(addr, "ledger_block", v)
}

/// `ledger_history` of `account` on the node at `addr`: its latest `limit` blocks, newest first.
pub async fn history(
    addr: SocketAddr,
    account: &AccountId,
    limit: usize,
) -> Result<Vec<BlockView>> {
    let limit = limit.clamp(1, MAX_SENDS);
    let v = client::rpc_call(addr, "ledger_history", json!([account.to_hex(), limit])).await?;
    decode(addr, "ledger_history", v)
}

/// `ledger_submit` of `block` through the node at `addr`.
pub async fn submit(addr: SocketAddr, block: &Block) -> Result<SubmitResult> {
    let v = client::rpc_call(addr, "ledger_submit", json!([hex::encode(block.encode())])).await?;
    decode(addr, "ledger_submit", v)
}

/// The message of an error without this run's addresses (reports should not carry them).
fn describe(e: &Error) -> String {
    match e {
        Error::Protocol { message, .. } | Error::Http { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The harness wallet: a genesis-funded key that sends credits, tracking its own chain head.
pub struct SimWallet {
    key: Keypair,
    account: AccountId,
    head: ChainView,
    recipients: Vec<AccountId>,
    sent: usize,
}

impl std::fmt::Debug for SimWallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimWallet")
            .field("account", &self.account)
            .field("height", &self.head.height)
            .finish()
    }
}

impl SimWallet {
    /// The wallet of `key`, a genesis account of `genesis` with no block yet.
    pub fn new(key: Keypair, genesis: &Genesis) -> Result<Self> {
        let account = AccountId::from_public_key(&key.public());
        if !genesis.accounts.iter().any(|a| a.account == account.0) {
            return Err(Error::Invalid(
                "the wallet key is not a genesis account".into(),
            ));
        }
        Ok(Self {
            head: ChainView {
                height: 0,
                frontier: Genesis::account_root(&genesis.hash(), &account),
                epoch: 0,
            },
            recipients: (0..RECIPIENTS)
                .map(|_| AccountId::from_public_key(&Keypair::generate().public()))
                .collect(),
            key,
            account,
            sent: 0,
        })
    }

    /// The wallet's account.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// Signs a Send of `amount` to the next recipient on top of the wallet's head, stating
    /// `epoch` (as `ledger_info` reports it). The head moves only with [`Self::accepted`].
    pub fn next_send(&self, epoch: u64, amount: Credits) -> Result<Block> {
        let destination = self.recipients[self.sent % self.recipients.len()];
        Wallet::new(&self.key)
            .build(
                Some(&self.head),
                epoch,
                BlockBody::Send {
                    destination,
                    amount,
                },
            )
            .map_err(|e| Error::Invalid(format!("building a send: {e}")))
    }

    /// Records that a node accepted `block` (built by [`Self::next_send`]): it is the new head.
    pub fn accepted(&mut self, block: &Block) {
        self.head = ChainView {
            height: block.height,
            frontier: block.hash(),
            epoch: block.epoch,
        };
        self.sent += 1;
    }
}

/// Parameters of the wallet traffic.
#[derive(Clone, Debug, Serialize)]
pub struct TrafficConfig {
    /// Time from one send's submission to the next one's (longer when a confirmation takes
    /// longer: one send is in flight at a time).
    #[serde(with = "crate::report::secs")]
    pub interval: Duration,
    /// Credits per send.
    #[serde(serialize_with = "credits")]
    pub amount: Credits,
    /// A send not reported confirmed this long after its submission is submitted again through
    /// another live node.
    #[serde(with = "crate::report::secs")]
    pub rebroadcast_after: Duration,
    /// Longest wait for one send's confirmation before the traffic moves on.
    #[serde(with = "crate::report::secs")]
    pub confirm_timeout: Duration,
    /// Most sends (at most [`MAX_SENDS`]).
    pub max_sends: usize,
}

fn credits<S: serde::Serializer>(c: &Credits, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&c.0.to_string())
}

/// One send of the traffic, as the harness saw it.
#[derive(Clone, Debug, Serialize)]
pub struct SendRecord {
    /// The block (hex).
    pub hash: String,
    /// First submitted, seconds since the measurement began.
    pub t_s: f64,
    /// The node that first accepted it (`None`: none did).
    pub via: Option<usize>,
    /// Submission calls, failed ones and rebroadcasts included.
    pub attempts: u32,
    /// Seconds from its acceptance until a node reported it confirmed (`None`: not within
    /// the traffic's confirmation timeout).
    pub confirm_s: Option<f64>,
    /// The node that reported it confirmed.
    pub confirmed_by: Option<usize>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// Node `i`'s HTTP address while it runs. The traffic holds the net's lock only to read addresses,
/// never across a call, so the churn never waits for a slow node.
async fn addr_of(net: &RwLock<TestNet>, i: usize) -> Option<SocketAddr> {
    net.read().await.http_addr(i).ok()
}

async fn random_live(net: &RwLock<TestNet>, rng: &mut SimRng) -> Option<(usize, SocketAddr)> {
    let net = net.read().await;
    let live = net.live();
    if live.is_empty() {
        return None;
    }
    let i = live[rng.below(live.len())];
    net.http_addr(i).ok().map(|a| (i, a))
}

/// The live nodes and their HTTP addresses now.
pub fn live_addrs(net: &TestNet) -> Vec<(usize, SocketAddr)> {
    net.live()
        .into_iter()
        .filter_map(|i| net.http_addr(i).ok().map(|a| (i, a)))
        .collect()
}

/// Sends credits from `wallet` every `cfg.interval` through a live node picked at random, and waits
/// for each send's confirmation (polling the node that accepted it, or another live node once it is
/// gone) before the next one. Holds `gate` while a send is in flight, so a check can pause the
/// traffic by locking it. Ends when `stop` turns true (after the send in flight) or after
/// `cfg.max_sends`.
pub async fn send_loop(
    net: Arc<RwLock<TestNet>>,
    mut wallet: SimWallet,
    cfg: TrafficConfig,
    seed: u64,
    t0: Instant,
    gate: Arc<Mutex<()>>,
    mut stop: watch::Receiver<bool>,
) -> Vec<SendRecord> {
    let mut rng = SimRng::new(seed);
    let mut log = Vec::new();
    let mut next = Instant::now();
    while !*stop.borrow() && log.len() < cfg.max_sends.min(MAX_SENDS) {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => break,
        }
        let _paused_while_held = tokio::select! {
            g = gate.lock() => g,
            _ = stop.changed() => break,
        };
        next = Instant::now() + cfg.interval;
        let record = send_one(&net, &mut wallet, &cfg, &mut rng, t0).await;
        let gave_up = record.via.is_none();
        log.push(record);
        if gave_up {
            // Twenty calls failed in a row: the net is unusable, or the block may sit only on a
            // node that died, leaving the head unknown. Stop rather than fork the wallet's chain.
            break;
        }
    }
    log
}

async fn send_one(
    net: &RwLock<TestNet>,
    wallet: &mut SimWallet,
    cfg: &TrafficConfig,
    rng: &mut SimRng,
    t0: Instant,
) -> SendRecord {
    let t_s = t0.elapsed().as_secs_f64();
    let mut attempts = 0;
    let mut last_error = String::new();
    // Build once, from the epoch a live node reports.
    let mut block = None;
    while block.is_none() && attempts < MAX_SUBMIT_ATTEMPTS {
        attempts += 1;
        let Some((i, addr)) = random_live(net, rng).await else {
            last_error = "no live node".into();
            tokio::time::sleep(CHECK_POLL).await;
            continue;
        };
        match info(addr).await {
            Ok(info) => match wallet.next_send(info.epoch, cfg.amount) {
                Ok(b) => block = Some((b, i, addr)),
                Err(e) => {
                    last_error = describe(&e);
                    break;
                }
            },
            Err(e) => last_error = format!("ledger_info on node {i}: {}", describe(&e)),
        }
    }
    let Some((block, mut i, mut addr)) = block else {
        return SendRecord {
            hash: String::new(),
            t_s,
            via: None,
            attempts,
            confirm_s: None,
            confirmed_by: None,
            error: Some(format!("no block built: {last_error}")),
        };
    };
    let hash = block.hash();
    let mut record = SendRecord {
        hash: hash.to_hex(),
        t_s,
        via: None,
        attempts: 0,
        confirm_s: None,
        confirmed_by: None,
        error: None,
    };
    // Submit the same block until a node accepts it.
    let accepted_at = loop {
        record.attempts += 1;
        let sent_at = Instant::now();
        match submit(addr, &block).await {
            Ok(r) if r.status == "applied" || r.status == "queued" => {
                record.via = Some(i);
                break sent_at;
            }
            Ok(r) => last_error = format!("node {i} answered {}", r.status),
            Err(e) => last_error = format!("ledger_submit on node {i}: {}", describe(&e)),
        }
        if record.attempts >= MAX_SUBMIT_ATTEMPTS {
            record.error = Some(format!("never accepted: {last_error}"));
            return record;
        }
        match random_live(net, rng).await {
            Some((j, a)) => (i, addr) = (j, a),
            None => tokio::time::sleep(CHECK_POLL).await,
        }
    };
    wallet.accepted(&block);
    let via = i;
    let mut rebroadcasts = 0u32;
    loop {
        // The accepting node while it runs (its address changes when it restarts), else any.
        let target = match addr_of(net, via).await {
            Some(a) => Some((via, a)),
            None => random_live(net, rng).await,
        };
        if let Some((n, a)) = target
            && let Ok(Some(b)) = self::block(a, &hash).await
            && b.confirmed
        {
            record.confirm_s = Some(accepted_at.elapsed().as_secs_f64());
            record.confirmed_by = Some(n);
            return record;
        }
        let waited = accepted_at.elapsed();
        if waited >= cfg.confirm_timeout {
            record.error = Some(format!(
                "not reported confirmed within {:.0} s",
                cfg.confirm_timeout.as_secs_f64()
            ));
            return record;
        }
        if waited >= cfg.rebroadcast_after * (rebroadcasts + 1)
            && let Some((_, a)) = random_live(net, rng).await
        {
            rebroadcasts += 1;
            record.attempts += 1;
            let _ = submit(a, &block).await;
        }
        tokio::time::sleep(CONFIRM_POLL).await;
    }
}

/// State roots of the live nodes at one check.
#[derive(Clone, Debug, Serialize)]
pub struct RootsCheck {
    /// When the check ended, seconds since the measurement began.
    pub t_s: f64,
    /// Live nodes asked.
    pub nodes: usize,
    /// Nodes in the largest group with one state root.
    pub agreeing: usize,
    /// Whether every live node answered with the same root.
    pub equal: bool,
    /// Seconds the check waited for that (the whole window when it never happened).
    pub settle_s: f64,
    /// Fewest and most confirmed blocks a node reported (`ledger_info.confirmed`).
    pub confirmed_range: (u64, u64),
    /// Fewest and most applied blocks a node reported (`ledger_info.blocks`).
    pub blocks_range: (u64, u64),
    /// Some nodes that did not answer or disagreed, and why.
    pub examples: Vec<String>,
}

async fn roots_once(nodes: &[(usize, SocketAddr)]) -> (Vec<(usize, LedgerInfo)>, Vec<String>) {
    let mut infos = Vec::with_capacity(nodes.len());
    let mut errors = Vec::new();
    for &(i, addr) in nodes {
        match info(addr).await {
            Ok(v) => infos.push((i, v)),
            Err(e) if errors.len() < MAX_EXAMPLES => {
                errors.push(format!("node {i}: {}", describe(&e)))
            }
            Err(_) => {}
        }
    }
    (infos, errors)
}

/// Asks `nodes` for `ledger_info` until they all answer with one state root, for at most `settle`.
pub async fn compare_roots(
    nodes: &[(usize, SocketAddr)],
    settle: Duration,
    t0: Instant,
) -> RootsCheck {
    let started = Instant::now();
    loop {
        let (infos, mut examples) = roots_once(nodes).await;
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, v) in &infos {
            groups.entry(v.state_root.as_str()).or_default().push(*i);
        }
        let agreeing = groups.values().map(Vec::len).max().unwrap_or(0);
        let equal = infos.len() == nodes.len() && agreeing == nodes.len();
        if equal || started.elapsed() >= settle {
            if !equal && let Some((major, _)) = groups.iter().max_by_key(|(_, v)| v.len()) {
                for (i, v) in &infos {
                    if v.state_root != *major && examples.len() < MAX_EXAMPLES {
                        examples.push(format!(
                            "node {i}: another root ({} blocks, {} confirmed, {} unchecked)",
                            v.blocks, v.confirmed, v.unchecked
                        ));
                    }
                }
            }
            let range = |f: fn(&LedgerInfo) -> u64| {
                let it = infos.iter().map(|(_, v)| f(v));
                (it.clone().min().unwrap_or(0), it.max().unwrap_or(0))
            };
            return RootsCheck {
                t_s: t0.elapsed().as_secs_f64(),
                nodes: nodes.len(),
                agreeing,
                equal,
                settle_s: started.elapsed().as_secs_f64(),
                confirmed_range: range(|v| v.confirmed),
                blocks_range: range(|v| v.blocks),
                examples,
            };
        }
        tokio::time::sleep(CHECK_POLL).await;
    }
}

/// Blocks of `account`'s chain some node reported confirmed: hash → the first report.
#[derive(Clone, Debug, Default)]
pub struct ConfirmedSeen {
    seen: BTreeMap<String, String>,
}

impl ConfirmedSeen {
    /// Records that `who` reported `hash` confirmed (the first report is kept).
    pub fn add(&mut self, hash: &str, who: impl FnOnce() -> String) {
        if !self.seen.contains_key(hash) {
            self.seen.insert(hash.to_string(), who());
        }
    }

    /// Whether some node reported `hash` confirmed.
    pub fn contains(&self, hash: &str) -> bool {
        self.seen.contains_key(hash)
    }

    /// How many blocks.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Reads `account`'s chain on every node of `nodes` and records what they hold confirmed.
    pub async fn harvest(
        &mut self,
        nodes: &[(usize, SocketAddr)],
        account: &AccountId,
        t0: Instant,
    ) {
        for &(i, addr) in nodes {
            if let Ok(chain) = history(addr, account, MAX_SENDS).await {
                let t = t0.elapsed().as_secs_f64();
                for b in chain.iter().filter(|b| b.confirmed) {
                    self.add(&b.hash, || format!("node {i} at {t:.1} s"));
                }
            }
        }
    }
}

/// A node's view of the wallet's chain: block hash → confirmed, or why it could not be read.
type Held = std::result::Result<BTreeMap<String, bool>, String>;

/// Whether every block some node reported confirmed is held confirmed by every live node.
#[derive(Clone, Debug, Serialize)]
pub struct BlocksCheck {
    /// Distinct blocks of the wallet's chain some node reported confirmed, at any time.
    pub confirmed_seen: usize,
    /// Of those, blocks some live node does not hold confirmed at the end (goal: 0).
    pub lost: usize,
    /// Live nodes checked.
    pub nodes: usize,
    /// Seconds the check waited for every node to hold every block.
    pub settle_s: f64,
    /// Some (node, block) pairs that were missing or unconfirmed, and who had reported the block
    /// confirmed.
    pub examples: Vec<String>,
}

/// Reads `account`'s chain on every node of `nodes` until each holds every block of `seen`
/// confirmed, for at most `settle`; blocks still missing or unconfirmed somewhere then are lost.
/// What the nodes report confirmed meanwhile joins `seen` first.
pub async fn check_blocks(
    nodes: &[(usize, SocketAddr)],
    account: &AccountId,
    seen: &mut ConfirmedSeen,
    settle: Duration,
    t0: Instant,
) -> BlocksCheck {
    let started = Instant::now();
    loop {
        let mut held: Vec<(usize, Held)> = Vec::with_capacity(nodes.len());
        let t = t0.elapsed().as_secs_f64();
        for &(i, addr) in nodes {
            let chain = history(addr, account, MAX_SENDS).await;
            let chain = chain.map(|c| {
                c.into_iter()
                    .map(|b| (b.hash, b.confirmed))
                    .collect::<BTreeMap<_, _>>()
            });
            if let Ok(c) = &chain {
                for (h, _) in c.iter().filter(|(_, confirmed)| **confirmed) {
                    seen.add(h, || format!("node {i} at {t:.1} s"));
                }
            }
            held.push((i, chain.map_err(|e| describe(&e))));
        }
        let mut lost = BTreeSet::new();
        let mut examples = Vec::new();
        for (i, chain) in &held {
            for (hash, first) in &seen.seen {
                let state = match chain {
                    Ok(c) => match c.get(hash) {
                        Some(true) => continue,
                        Some(false) => "held unconfirmed".to_string(),
                        None => "missing".to_string(),
                    },
                    Err(e) => format!("unreadable ({e})"),
                };
                lost.insert(hash.clone());
                if examples.len() < MAX_EXAMPLES {
                    examples.push(format!(
                        "node {i}: {hash} {state} (reported confirmed by {first})"
                    ));
                }
            }
        }
        if lost.is_empty() || started.elapsed() >= settle {
            return BlocksCheck {
                confirmed_seen: seen.len(),
                lost: lost.len(),
                nodes: nodes.len(),
                settle_s: started.elapsed().as_secs_f64(),
                examples,
            };
        }
        tokio::time::sleep(CHECK_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_ledger::{GenesisAccount, Ledger, Params};

    #[test]
    fn the_wallet_chains_its_sends_and_never_moves_without_acceptance() {
        let key = Keypair::generate();
        let staker = Keypair::generate();
        let genesis = Genesis {
            network: "t".into(),
            seed: [1; 32],
            start_time: 0,
            accounts: vec![
                GenesisAccount {
                    account: *key.public().as_bytes(),
                    balance: Credits::whole(10),
                    stake: Credits::ZERO,
                },
                GenesisAccount {
                    account: *staker.public().as_bytes(),
                    balance: Credits::ZERO,
                    stake: Credits::whole(1),
                },
            ],
            params: Params::default(),
        };
        let mut ledger = Ledger::new(&genesis).expect("genesis");
        let mut w = SimWallet::new(key, &genesis).expect("a genesis account");
        let first = w.next_send(0, Credits::whole(1)).expect("valid");
        // Not accepted: the next build takes the same place on the chain.
        assert_eq!(w.next_send(0, Credits::whole(1)).expect("valid").height, 1);
        ledger.process(first.clone(), 1).expect("valid");
        w.accepted(&first);
        let second = w.next_send(0, Credits::whole(1)).expect("valid");
        assert_eq!(second.previous, first.hash());
        assert_ne!(
            second.body, first.body,
            "sends go to the recipients in turn"
        );
        ledger.process(second, 1).expect("valid");
        assert_eq!(ledger.balance(&w.account()).liquid, Credits::whole(8));
        assert!(SimWallet::new(Keypair::generate(), &genesis).is_err());
    }
}
