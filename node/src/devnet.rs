//! A local development network in one process: `mycel-node devnet --nodes N --dir <dir>`.
//!
//! The first run creates `<dir>`: one data dir per node (`node-<i>`, with its node key), a genesis in
//! which every node account is staked and a wallet account is funded, the wallet's encrypted keystore
//! (`wallet/keys/default.json`, the wallet CLI's default key; password in `wallet/password`, mode 0600) and, once the nodes run,
//! `devnet.json` describing everything a client needs. Later runs reuse the same keys, genesis and
//! ledgers, so the network survives restarts. Nodes listen on loopback only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mycel_identity::keystore::{Keystore, Password};
use mycel_identity::{Did, Keypair};
use mycel_ledger::{AccountId, Credits, Genesis, GenesisAccount, Params};
use mycel_models::ChatModel;
use serde::{Deserialize, Serialize};

use crate::config::{Config, ledger_file};
use crate::error::{NodeError, Result};
use crate::ledger::LedgerOptions;
use crate::node::{RunningNode, StartOptions};
use crate::node_key;

/// Name of the description file written into the devnet directory.
pub const DEVNET_FILE: &str = "devnet.json";
/// Name of the genesis file in the devnet directory.
pub const GENESIS_FILE: &str = "genesis.json";
/// Name of the funded wallet key in the devnet keystore.
pub const WALLET_KEY: &str = "default";
/// Most nodes one devnet runs.
pub const MAX_NODES: usize = 64;
/// Stake of each node account at genesis, in credits.
pub const NODE_STAKE: u128 = 1_000;
/// Liquid balance of each node account at genesis, in credits.
pub const NODE_BALANCE: u128 = 100;
/// Liquid balance of the wallet at genesis, in credits.
pub const WALLET_BALANCE: u128 = 10_000;

/// What to run.
#[derive(Clone, Debug)]
pub struct DevnetSpec {
    /// Number of nodes (1..=[`MAX_NODES`]).
    pub nodes: usize,
    /// The devnet directory.
    pub dir: PathBuf,
    /// HTTP port of node 0; node `i` uses `http_port + i` (0: OS-chosen ports).
    pub http_port: u16,
    /// Parameters of a new genesis (an existing genesis keeps its own).
    pub params: Params,
    /// Ledger duty period.
    pub ledger_tick: Duration,
    /// Heartbeat period in seconds.
    pub heartbeat_secs: u64,
    /// Node 0 serves no model (when there are other nodes): its queries go to the others over libp2p
    /// and are paid from its account, so credits move.
    pub gateway: bool,
}

/// One node in `devnet.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetNode {
    /// `node-<i>`.
    pub name: String,
    /// The node's DID (also its ledger account).
    pub did: String,
    /// Its PeerId.
    pub peer_id: String,
    /// Its libp2p multiaddrs (with `/p2p/<PeerId>`).
    pub p2p: Vec<String>,
    /// Its JSON-RPC / OpenAI base URL.
    pub rpc: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Models it serves (none: a gateway that pays other nodes for its queries).
    pub models: Vec<String>,
}

/// The funded wallet in `devnet.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetWallet {
    /// Wallet home for `mycel --home`.
    pub home: PathBuf,
    /// Key name in it.
    pub key: String,
    /// The encrypted key file.
    pub keystore: PathBuf,
    /// File holding its password (for `mycel --password-file`).
    pub password_file: PathBuf,
    /// Its DID.
    pub did: String,
    /// Genesis balance, µ-credits.
    pub genesis_balance: String,
}

/// `devnet.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetInfo {
    /// Network name.
    pub network: String,
    /// Genesis file.
    pub genesis: PathBuf,
    /// Genesis hash (hex).
    pub genesis_hash: String,
    /// The nodes.
    pub nodes: Vec<DevnetNode>,
    /// The funded wallet.
    pub wallet: DevnetWallet,
}

/// A devnet's files, created or reused.
#[derive(Debug)]
pub struct Prepared {
    spec: DevnetSpec,
    genesis: Genesis,
    keys: Vec<Keypair>,
    wallet: DevnetWallet,
}

fn node_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("node-{i}"))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> NodeError + '_ {
    move |e| NodeError::io(path, e)
}

/// Writes `bytes` to `path` through a temporary file and a rename, mode 0600 where supported.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        std::io::Write::write_all(&mut f, bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Creates the devnet directory (keys, genesis, wallet) or checks and reuses an existing one.
pub fn prepare(spec: DevnetSpec) -> Result<Prepared> {
    if spec.nodes == 0 || spec.nodes > MAX_NODES {
        return Err(NodeError::Config(format!(
            "--nodes must be between 1 and {MAX_NODES}"
        )));
    }
    let dir = &spec.dir;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut keys = Vec::with_capacity(spec.nodes);
    for i in 0..spec.nodes {
        keys.push(node_key::load_or_create(&node_dir(dir, i))?.0);
    }
    let home = dir.join("wallet");
    let password_file = home.join("password");
    let store = Keystore::open(home.join("keys"))
        .map_err(|e| NodeError::Config(format!("devnet keystore: {e}")))?;
    let keystore = store
        .path_of(WALLET_KEY)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let wallet_key = if keystore.exists() {
        let password = std::fs::read(&password_file).map_err(io(&password_file))?;
        store
            .load(WALLET_KEY, &Password::new(password))
            .map_err(|e| NodeError::Config(format!("devnet wallet key: {e}")))?
    } else {
        let mut secret = [0u8; 24];
        rand::fill(&mut secret);
        let password = hex::encode(secret);
        write_private(&password_file, password.as_bytes())?;
        let key = Keypair::generate();
        store
            .insert(
                WALLET_KEY,
                &key,
                &Password::new(password.into_bytes()),
                time::OffsetDateTime::now_utc(),
            )
            .map_err(|e| NodeError::Config(format!("devnet wallet key: {e}")))?;
        key
    };
    let genesis_path = dir.join(GENESIS_FILE);
    let genesis = if genesis_path.exists() {
        let text = std::fs::read_to_string(&genesis_path).map_err(io(&genesis_path))?;
        let g = Genesis::from_json(&text)
            .map_err(|e| NodeError::Config(format!("{}: {e}", genesis_path.display())))?;
        for k in &keys {
            let id = AccountId::from_public_key(&k.public());
            if !g.accounts.iter().any(|a| a.account == id.0) {
                return Err(NodeError::Config(format!(
                    "{} was made for other nodes (or fewer of them); delete {} to start a new devnet",
                    genesis_path.display(),
                    dir.display()
                )));
            }
        }
        g
    } else {
        let g = new_genesis(&keys, &wallet_key, spec.params.clone());
        write_private(&genesis_path, g.to_json().as_bytes())?;
        g
    };
    let wallet = DevnetWallet {
        home,
        key: WALLET_KEY.into(),
        keystore,
        password_file,
        did: Did::from_public_key(wallet_key.public()).to_string(),
        genesis_balance: Credits::whole(WALLET_BALANCE).0.to_string(),
    };
    Ok(Prepared {
        spec,
        genesis,
        keys,
        wallet,
    })
}

/// The parameters of a devnet genesis: the defaults, with `epoch_secs` and a proof of work low enough
/// for an interactive devnet (still a real one).
pub fn devnet_params(epoch_secs: u64) -> Params {
    Params {
        epoch_secs,
        open_work_bits: 12,
        ..Params::default()
    }
}

fn new_genesis(nodes: &[Keypair], wallet: &Keypair, params: Params) -> Genesis {
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let mut accounts: Vec<GenesisAccount> = nodes
        .iter()
        .map(|k| GenesisAccount {
            account: *k.public().as_bytes(),
            balance: Credits::whole(NODE_BALANCE),
            stake: Credits::whole(NODE_STAKE),
        })
        .collect();
    accounts.push(GenesisAccount {
        account: *wallet.public().as_bytes(),
        balance: Credits::whole(WALLET_BALANCE),
        stake: Credits::ZERO,
    });
    let start_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Genesis {
        network: "mycel-devnet".into(),
        seed,
        start_time,
        accounts,
        params,
    }
}

impl Prepared {
    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The funded wallet.
    pub fn wallet(&self) -> &DevnetWallet {
        &self.wallet
    }

    /// Starts every node in this process, node 0 first and the others bootstrapped to it, all serving
    /// `models`; then writes `devnet.json`.
    pub async fn start(self, models: BTreeMap<String, Arc<ChatModel>>) -> Result<Devnet> {
        let dir = self.spec.dir.clone();
        let mut nodes: Vec<RunningNode> = Vec::with_capacity(self.keys.len());
        let mut bootstrap = Vec::new();
        for (i, key) in self.keys.iter().enumerate() {
            let data_dir = node_dir(&dir, i);
            let port = match self.spec.http_port {
                0 => 0,
                p => p.checked_add(i as u16).ok_or_else(|| {
                    NodeError::Config("--http-port + --nodes exceeds 65535".into())
                })?,
            };
            let mut config = Config::loopback(bootstrap.clone());
            config.http = SocketAddr::from(([127, 0, 0, 1], port));
            config.heartbeat_interval_secs = self.spec.heartbeat_secs;
            config.infer_timeout_secs = 120;
            let serves = if i == 0 && self.spec.gateway && self.keys.len() > 1 {
                BTreeMap::new()
            } else {
                models.clone()
            };
            config.models = serves.keys().cloned().collect();
            let started = RunningNode::start(StartOptions {
                shards: Default::default(),
                models_dir: None,
                key: key.clone(),
                config,
                models: serves,
                info_file: Some(data_dir.join("node.json")),
                ledger: Some(LedgerOptions {
                    genesis: self.genesis.clone(),
                    path: ledger_file(&data_dir),
                    tick: self.spec.ledger_tick,
                }),
            })
            .await;
            let node = match started {
                Ok(n) => n,
                Err(e) => {
                    for n in nodes.into_iter().rev() {
                        n.shutdown().await;
                    }
                    return Err(e);
                }
            };
            if i == 0 {
                bootstrap = node
                    .node
                    .listen_addrs()
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
            }
            nodes.push(node);
        }
        let info = DevnetInfo {
            network: self.genesis.network.clone(),
            genesis: dir.join(GENESIS_FILE),
            genesis_hash: hex::encode(self.genesis.hash()),
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let ni = n.node.info();
                    DevnetNode {
                        name: format!("node-{i}"),
                        did: ni.did,
                        peer_id: ni.peer_id,
                        p2p: ni.listen_addrs,
                        rpc: ni.http_url,
                        data_dir: node_dir(&dir, i),
                        models: ni.models,
                    }
                })
                .collect(),
            wallet: self.wallet.clone(),
        };
        let json =
            serde_json::to_vec_pretty(&info).map_err(|e| NodeError::Config(e.to_string()))?;
        write_private(&dir.join(DEVNET_FILE), &json)?;
        Ok(Devnet { nodes, info })
    }
}

/// A running devnet.
#[derive(Debug)]
pub struct Devnet {
    /// The nodes, node 0 first.
    pub nodes: Vec<RunningNode>,
    /// What `devnet.json` says.
    pub info: DevnetInfo,
}

impl Devnet {
    /// Stops every node cleanly, the last started first.
    pub async fn shutdown(self) {
        for n in self.nodes.into_iter().rev() {
            n.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, nodes: usize) -> DevnetSpec {
        DevnetSpec {
            nodes,
            dir: dir.to_path_buf(),
            http_port: 0,
            params: devnet_params(600),
            ledger_tick: Duration::from_millis(300),
            heartbeat_secs: 1,
            gateway: true,
        }
    }

    #[test]
    fn prepare_creates_then_reuses_keys_genesis_and_wallet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = prepare(spec(dir.path(), 3)).expect("first prepare");
        first.genesis().validate().expect("valid genesis");
        assert_eq!(first.genesis().accounts.len(), 4);
        let again = prepare(spec(dir.path(), 3)).expect("second prepare");
        assert_eq!(first.genesis(), again.genesis());
        assert_eq!(first.wallet(), again.wallet());
        // More nodes than the genesis knows is refused with advice, not silently re-genesised.
        let err = prepare(spec(dir.path(), 4)).expect_err("genesis mismatch");
        assert!(err.to_string().contains("delete"), "{err}");
        assert!(prepare(spec(dir.path(), 0)).is_err());
    }
}
