//! Node configuration: a TOML file (`<data_dir>/config.toml` or `--config`), overridden by CLI flags.
//!
//! Every field has a default, documented next to it and in [`DEFAULT_CONFIG_TOML`] (the file `init`
//! writes), so an empty file is a valid configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::error::{NodeError, Result};

/// Id of the built-in random-weight test model (not in the registry; instant to load, offline).
pub const TINY_MODEL_ID: &str = "tiny";

/// Environment variable naming the data directory when `--data-dir` is absent.
pub const DATA_DIR_ENV: &str = "MYCEL_DATA_DIR";

/// Name of the configuration file inside the data directory.
pub const CONFIG_FILE: &str = "config.toml";

/// Default HTTP address of the JSON-RPC + OpenAI API (loopback only).
pub const DEFAULT_HTTP: &str = "127.0.0.1:7400";

/// Default libp2p listen addresses: loopback TCP and QUIC on OS-chosen ports.
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"];

/// Largest accepted configuration file; anything bigger is a mistake, not a config.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The commented configuration `mycel-node init` writes; parsing it gives [`Config::default`].
pub const DEFAULT_CONFIG_TOML: &str = r#"# mycel-node configuration. Every key is optional; the values below are the defaults.
# Command-line flags override this file.

# libp2p listen multiaddrs (TCP and QUIC on loopback, OS-chosen ports). Use /ip4/0.0.0.0/... to accept
# connections from other machines.
listen = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]

# Peers dialed at start, as full multiaddrs ending in /p2p/<PeerId>.
bootstrap = []

# Discover peers on the local network with mDNS.
mdns = true

# Act as a libp2p relay (circuit relay v2) for peers behind NATs. Every node is a relay client and
# learns its NAT status (AutoNAT) and upgrades relayed connections by hole punching (DCUtR).
relay_server = false

# Connected peers kept: the best by round trip and load, plus a pool drawn at random from the rest
# (so a node is never surrounded only by the peers that look best); beyond both, the others are
# disconnected, and below, more are dialed from the DHT. Bootstrap peers are always kept.
shortlist_peers = 32
random_peers = 16

# Address of the HTTP API: JSON-RPC 2.0 at POST /, OpenAI-compatible API under /v1.
http = "127.0.0.1:7400"

# Models this node serves (registry ids; "tiny" is the built-in random-weight test model).
# Missing models are pulled into <data_dir>/models on first start. An empty list serves nothing and
# only forwards queries to peers.
models = ["smollm2-135m-instruct"]

# Generations run at once on this node (local and for peers); more requests get "busy".
max_concurrent_generations = 2

# Seconds between signed health heartbeats on gossipsub.
heartbeat_interval_secs = 5

# Seconds a remote inference request may take before it is abandoned.
infer_timeout_secs = 120

# The network's genesis file (relative paths are inside the data dir). Without one the node keeps no
# ledger: it serves and forwards chat but earns nothing and answers no ledger_* requests.
# genesis = "genesis.json"

# Milliseconds between ledger duties: vote rebroadcast, checkpoint signing, sync with one peer.
ledger_tick_ms = 2000

# Answers of deterministic requests (temperature 0, or a seed the client chose) remembered and
# replayed for exact repeats without running the model (least recently used dropped first; at most
# 16 MiB of answer text). 0 turns the response cache off.
response_cache_entries = 1024

# Bearer token that lets non-loopback clients call state-changing JSON-RPC methods (ledger_submit).
# Loopback clients never need it. Unset: only loopback clients may change state.
# rpc_token = "a long random string"

# Layer ranges served to sharded pipelines (specs/models.md, "Sharded serving"). Each entry is
# "<model>:<from>-<to>" (layers [from, to)) or "<model>:auto": the node picks the worst-covered
# aligned window of `span` layers and moves when heartbeats show another window below `replication`
# live servers ("Rebalancing"). Clients ask for a pipeline with the model name "<model>@sharded".
# [serve]
# ranges = ["smollm2-135m-instruct:auto"]
# span = 10
# replication = 2
#
# Domain experts this node serves, each as the model id "expert:<domain>": a served model answering
# under a system prompt (specs/models.md, "Experts and the federated router").
# [[serve.experts]]
# domain = "cooking"
# model = "smollm2-135m-instruct"
# system_prompt = "You are an experienced chef. Answer cooking questions precisely."

# The expert router: embeds queries sent to the model "experts" and forwards each to the expert of
# the nearest domain. Domain centroids are learned from local labelled examples (never sent) and from
# peers' signed, differentially private centroid updates, aggregated robustly.
# [router]
# embedding_model = "all-minilm-l6-v2"
# examples = "router-examples.json"    # {"<domain>": ["an example query", …], …}; optional
# epsilon = 0.5                        # privacy budget per update round (ε ≤ 1, δ ≤ 1e-3)
# delta = 1e-6
# noise = true                         # false: updates are clipped means without noise, NOT private
#                                      # (trusted consortiums, or too few examples: at ε = 0.5 a
#                                      # domain needs ~400 examples per node for a usable update)
# update_interval_secs = 30

# Model manifests (specs/models.md, "Model manifests and updates"): publishers sign "version N of
# model M is this file (sha256, size, layers), fetch it from here"; every node relays valid manifests
# and re-publishes those it holds. A node adopts a newer version of a model it serves only from a
# publisher listed here, after the downloaded file matched the manifest's sha256 and size.
[manifests]
trusted_publishers = []           # did:key DIDs whose manifests this node adopts (at most 64)
auto_adopt = true                 # false: list trusted newer versions (mycel_manifests), adopt none
republish_interval_secs = 60      # seconds between re-publications of the manifests held

# Consortium mode (specs/wire.md, "Consortium mode"): with this section the node admits only peers that
# present a valid membership credential (W3C VC-JWT) from a trusted issuer right after connecting.
# Peers that fail or stay silent past the deadline are disconnected and blocked. Relative paths are
# inside the data dir.
# [consortium]
# id = "acme"                                   # consortium name (the credential's memberOf)
# trusted_issuers = ["did:key:z6Mk..."]         # admin DIDs whose credentials and revocations count
# credential = "membership.jwt"                 # this node's own credential, issued to its DID
# psk = "swarm.key"                             # optional libp2p pnet key file (TCP only, no QUIC)
# revocations = "revocations.json"              # where accepted revocations are kept
# handshake_timeout_secs = 10                   # deadline for a peer to present its credential
"#;

/// The node's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// libp2p listen multiaddrs. Default: [`DEFAULT_LISTEN`].
    pub listen: Vec<String>,
    /// Multiaddrs (with `/p2p/<PeerId>`) dialed at start. Default: none.
    pub bootstrap: Vec<String>,
    /// mDNS discovery on the local network. Default: on.
    pub mdns: bool,
    /// Serve as a circuit relay v2 for other peers. Default: off.
    pub relay_server: bool,
    /// Best peers kept connected. Default: 32.
    pub shortlist_peers: usize,
    /// Peers kept connected at random beyond the shortlist. Default: 16.
    pub random_peers: usize,
    /// HTTP API address. Default: [`DEFAULT_HTTP`].
    pub http: SocketAddr,
    /// Models to serve. Default: the registry's default chat model.
    pub models: Vec<String>,
    /// Concurrent generations. Default: 2 (one per core on the reference machine).
    pub max_concurrent_generations: usize,
    /// Heartbeat period in seconds. Default: 5.
    pub heartbeat_interval_secs: u64,
    /// Remote inference deadline in seconds. Default: 120.
    pub infer_timeout_secs: u64,
    /// Genesis file of the network (relative: inside the data dir). Default: none (no ledger).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub genesis: Option<PathBuf>,
    /// Period of the ledger's duties in milliseconds. Default: 2000.
    pub ledger_tick_ms: u64,
    /// Bearer token for state-changing RPC from non-loopback clients. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_token: Option<RpcToken>,
    /// Answers the response cache keeps ([`crate::cache`]); 0 turns it off. Default:
    /// [`crate::cache::DEFAULT_CACHE_ENTRIES`] (1024).
    pub response_cache_entries: usize,
    /// Consortium mode ([`crate::membership`]). Default: none (an open network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consortium: Option<ConsortiumConfig>,
    /// Layer ranges and experts served. Default: none.
    pub serve: ServeConfig,
    /// The expert router. Default: none (queries to `experts` are refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterConfig>,
    /// Signed model manifests: whose versions to adopt. Default: trust nobody.
    pub manifests: ManifestsConfig,
}

/// The `[manifests]` section: adoption of new model versions from signed manifests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManifestsConfig {
    /// DIDs (`did:key:…`) whose manifests this node adopts. Default: none.
    pub trusted_publishers: Vec<String>,
    /// Adopt newer versions from trusted publishers as they arrive. Default: true.
    pub auto_adopt: bool,
    /// Seconds between re-publications of the manifests held (gossipsub does not deliver old
    /// messages to nodes that join later). Default: 60.
    pub republish_interval_secs: u64,
}

impl Default for ManifestsConfig {
    fn default() -> Self {
        Self {
            trusted_publishers: Vec::new(),
            auto_adopt: true,
            republish_interval_secs: 60,
        }
    }
}

impl ManifestsConfig {
    /// The trusted publishers, parsed.
    pub fn trusted(&self) -> Result<Vec<mycel_identity::Did>> {
        if self.trusted_publishers.len() > crate::manifest::MAX_TRUSTED_PUBLISHERS {
            return Err(NodeError::Config(format!(
                "manifests.trusted_publishers lists more than {} DIDs",
                crate::manifest::MAX_TRUSTED_PUBLISHERS
            )));
        }
        self.trusted_publishers
            .iter()
            .map(|d| {
                d.parse().map_err(|e| {
                    NodeError::Config(format!(
                        "manifests.trusted_publishers: `{d}` is not a did:key: {e}"
                    ))
                })
            })
            .collect()
    }
}

/// One `[[serve.experts]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpertConfig {
    /// Domain tag (`[a-z0-9-]{1,32}`); served as the model id `expert:<domain>`.
    pub domain: String,
    /// A model this node serves.
    pub model: String,
    /// Put before every conversation.
    pub system_prompt: String,
}

/// The `[router]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Embedding model (registry id). Default: `all-minilm-l6-v2`.
    pub embedding_model: String,
    /// Local labelled examples, JSON `{"<domain>": ["query", …]}` (relative: inside the data dir).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub examples: Option<PathBuf>,
    /// ε per update round. Default: 0.5.
    pub epsilon: f64,
    /// δ per update round. Default: 1e-6.
    pub delta: f64,
    /// Noise the updates for (ε, δ)-differential privacy. Default: true. False releases plain
    /// clipped means (not private).
    pub noise: bool,
    /// Seconds between update rounds. Default: 30.
    pub update_interval_secs: u64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            embedding_model: "all-minilm-l6-v2".into(),
            examples: None,
            epsilon: 0.5,
            delta: 1e-6,
            noise: true,
            update_interval_secs: 30,
        }
    }
}

impl RouterConfig {
    /// Makes a relative `examples` path relative to `data_dir`.
    pub fn resolve_paths(&mut self, data_dir: &Path) {
        if let Some(p) = &mut self.examples
            && p.is_relative()
        {
            *p = data_dir.join(&*p);
        }
    }
}

/// The `[serve]` section: layer ranges served to sharded pipelines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// `"<model>:<from>-<to>"` or `"<model>:auto"` entries. Default: none.
    pub ranges: Vec<String>,
    /// Layers of an automatic range. Default: 10.
    pub span: u32,
    /// Live servers per layer automatic ranges aim for. Default: 2.
    pub replication: u32,
    /// Domain experts served. Default: none.
    pub experts: Vec<ExpertConfig>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            ranges: Vec::new(),
            span: 10,
            replication: 2,
            experts: Vec::new(),
        }
    }
}

/// One parsed `serve.ranges` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// Model id.
    pub model: String,
    /// `[from, to)`, or none for an automatic range.
    pub range: Option<(u32, u32)>,
}

impl ShardSpec {
    /// Parses `"<model>:<from>-<to>"` or `"<model>:auto"`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            NodeError::Config(format!(
                "serve.ranges entry `{s}` is not `<model>:<from>-<to>` or `<model>:auto`"
            ))
        };
        let (model, range) = s.rsplit_once(':').ok_or_else(bad)?;
        if model.is_empty() || model.len() > crate::chat::MAX_MODEL_ID_LEN {
            return Err(bad());
        }
        let range = match range {
            "auto" => None,
            r => {
                let (a, b) = r.split_once('-').ok_or_else(bad)?;
                let (a, b) = (
                    a.parse::<u32>().map_err(|_| bad())?,
                    b.parse::<u32>().map_err(|_| bad())?,
                );
                if a >= b {
                    return Err(bad());
                }
                Some((a, b))
            }
        };
        Ok(Self {
            model: model.to_string(),
            range,
        })
    }
}

impl ServeConfig {
    /// The parsed entries (at most one per model).
    pub fn specs(&self) -> Result<Vec<ShardSpec>> {
        let specs = self
            .ranges
            .iter()
            .map(|r| ShardSpec::parse(r))
            .collect::<Result<Vec<_>>>()?;
        for (i, s) in specs.iter().enumerate() {
            if specs[..i].iter().any(|o| o.model == s.model) {
                return Err(NodeError::Config(format!(
                    "serve.ranges names `{}` twice: a node serves one range per model",
                    s.model
                )));
            }
        }
        Ok(specs)
    }
}

/// The `[consortium]` section: who may join this node's network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsortiumConfig {
    /// The consortium name; credentials must say `memberOf` exactly this.
    pub id: String,
    /// DIDs of the admins whose credentials and revocations this node accepts (at least one).
    pub trusted_issuers: Vec<String>,
    /// This node's own credential file (a VC-JWT issued to the node's DID).
    pub credential: PathBuf,
    /// Pre-shared key file for libp2p pnet (`/key/swarm/psk/1.0.0/` format). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk: Option<PathBuf>,
    /// File of accepted revocations (JSON). Default: `revocations.json` in the data dir.
    #[serde(default = "default_revocations_file")]
    pub revocations: PathBuf,
    /// Seconds a peer has to present a valid credential after connecting. Default: 10.
    #[serde(default = "default_handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
}

fn default_revocations_file() -> PathBuf {
    PathBuf::from("revocations.json")
}

fn default_handshake_timeout_secs() -> u64 {
    crate::membership::DEFAULT_HANDSHAKE_TIMEOUT.as_secs()
}

impl ConsortiumConfig {
    /// Makes relative paths relative to `data_dir`.
    pub fn resolve_paths(&mut self, data_dir: &Path) {
        for p in [&mut self.credential, &mut self.revocations] {
            if p.is_relative() {
                *p = data_dir.join(&*p);
            }
        }
        if let Some(p) = &mut self.psk
            && p.is_relative()
        {
            *p = data_dir.join(&*p);
        }
    }
}

/// The RPC bearer token: a secret, so `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RpcToken(pub String);

impl std::fmt::Debug for RpcToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcToken(<redacted>)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect(),
            bootstrap: Vec::new(),
            mdns: true,
            relay_server: false,
            shortlist_peers: 32,
            random_peers: 16,
            http: DEFAULT_HTTP
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7400))),
            models: vec![mycel_models::registry::DEFAULT_CHAT_MODEL.to_string()],
            max_concurrent_generations: 2,
            heartbeat_interval_secs: 5,
            infer_timeout_secs: 120,
            genesis: None,
            ledger_tick_ms: 2000,
            rpc_token: None,
            response_cache_entries: crate::cache::DEFAULT_CACHE_ENTRIES,
            consortium: None,
            serve: ServeConfig::default(),
            router: None,
            manifests: ManifestsConfig::default(),
        }
    }
}

impl Config {
    /// A node for tests and local simulations: loopback TCP on an ephemeral port, HTTP on an
    /// ephemeral loopback port, no mDNS, no model (callers pass loaded models to the node), 1 s
    /// heartbeats, 30 s inference deadline.
    pub fn loopback(bootstrap: Vec<String>) -> Self {
        Self {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            bootstrap,
            mdns: false,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            models: Vec::new(),
            heartbeat_interval_secs: 1,
            infer_timeout_secs: 30,
            ledger_tick_ms: 500,
            ..Self::default()
        }
    }

    /// Parses TOML text and checks it.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let c: Self = toml::from_str(text).map_err(|e| NodeError::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let len = std::fs::metadata(path)
            .map_err(|e| NodeError::io(path, e))?
            .len();
        if len > MAX_CONFIG_BYTES {
            return Err(NodeError::Config(format!(
                "{} is {len} bytes, more than the {MAX_CONFIG_BYTES} a config may have",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| NodeError::io(path, e))?;
        Self::from_toml_str(&text)
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        for a in self.listen.iter().chain(&self.bootstrap) {
            a.parse::<Multiaddr>()
                .map_err(|e| NodeError::Config(format!("bad multiaddr `{a}`: {e}")))?;
        }
        if self.max_concurrent_generations == 0 {
            return Err(NodeError::Config(
                "max_concurrent_generations must be at least 1".into(),
            ));
        }
        let max = crate::network::MAX_PEERS;
        if self.shortlist_peers == 0 || self.shortlist_peers + self.random_peers > max {
            return Err(NodeError::Config(format!(
                "shortlist_peers must be at least 1 and shortlist_peers + random_peers at most {max}"
            )));
        }
        if !(50..=600_000).contains(&self.ledger_tick_ms) {
            return Err(NodeError::Config(
                "ledger_tick_ms must be between 50 and 600000".into(),
            ));
        }
        if self.heartbeat_interval_secs == 0 || self.infer_timeout_secs == 0 {
            return Err(NodeError::Config(
                "heartbeat_interval_secs and infer_timeout_secs must be at least 1".into(),
            ));
        }
        self.serve.specs()?;
        for e in &self.serve.experts {
            e.domain
                .parse::<crate::experts::DomainTag>()
                .map_err(|err| NodeError::Config(format!("serve.experts: {err}")))?;
        }
        if let Some(r) = &self.router {
            crate::experts::DpParams::new(r.epsilon, r.delta)
                .map_err(|err| NodeError::Config(format!("router: {err}")))?;
            if r.update_interval_secs == 0 {
                return Err(NodeError::Config(
                    "router.update_interval_secs must be at least 1".into(),
                ));
            }
        }
        self.manifests.trusted()?;
        if self.manifests.republish_interval_secs == 0 {
            return Err(NodeError::Config(
                "manifests.republish_interval_secs must be at least 1".into(),
            ));
        }
        if self.serve.span == 0 || self.serve.replication == 0 {
            return Err(NodeError::Config(
                "serve.span and serve.replication must be at least 1".into(),
            ));
        }
        if let Some(c) = &self.consortium {
            crate::membership::validate_config(c)?;
            if c.psk.is_some() && self.listen.iter().any(|a| a.contains("/quic")) {
                return Err(NodeError::Config(
                    "consortium.psk (libp2p pnet) works over TCP only: remove the QUIC listen \
                     addresses"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Parsed listen addresses.
    pub fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        parse_addrs(&self.listen)
    }

    /// Parsed bootstrap addresses.
    pub fn bootstrap_addrs(&self) -> Result<Vec<Multiaddr>> {
        parse_addrs(&self.bootstrap)
    }
}

fn parse_addrs(v: &[String]) -> Result<Vec<Multiaddr>> {
    v.iter()
        .map(|a| {
            a.parse()
                .map_err(|e| NodeError::Config(format!("bad multiaddr `{a}`: {e}")))
        })
        .collect()
}

/// The data directory: `--data-dir`, else `$MYCEL_DATA_DIR`, else the per-user data dir.
pub fn resolve_data_dir(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(d);
    }
    if let Some(d) = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    directories::ProjectDirs::from("", "", "mycel")
        .map(|p| p.data_dir().join("node"))
        .ok_or_else(|| {
            NodeError::Config(format!(
                "no home directory to put data in: pass --data-dir or set {DATA_DIR_ENV}"
            ))
        })
}

/// The ledger database inside a data directory.
pub fn ledger_file(data_dir: &Path) -> PathBuf {
    data_dir.join("ledger.redb")
}

/// Reads a genesis file and the ledger settings of `config` (none when it names no genesis).
pub fn ledger_options(
    config: &Config,
    data_dir: &Path,
) -> Result<Option<crate::ledger::LedgerOptions>> {
    let Some(path) = &config.genesis else {
        return Ok(None);
    };
    let path = data_dir.join(path);
    let text = std::fs::read_to_string(&path).map_err(|e| NodeError::io(&path, e))?;
    let genesis = mycel_ledger::Genesis::from_json(&text)
        .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
    Ok(Some(crate::ledger::LedgerOptions {
        genesis,
        path: ledger_file(data_dir),
        tick: std::time::Duration::from_millis(config.ledger_tick_ms),
    }))
}

/// Where models are cached inside a data directory.
pub fn models_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults_match_the_code() {
        let parsed = Config::from_toml_str(DEFAULT_CONFIG_TOML).expect("default config parses");
        assert_eq!(parsed, Config::default());
        assert_eq!(
            Config::from_toml_str("").expect("empty parses"),
            Config::default()
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(Config::from_toml_str("listen = [\"not a multiaddr\"]").is_err());
        assert!(Config::from_toml_str("max_concurrent_generations = 0").is_err());
        assert!(Config::from_toml_str("shortlist_peers = 0").is_err());
        assert!(Config::from_toml_str("shortlist_peers = 100\nrandom_peers = 29").is_err());
        assert!(Config::from_toml_str("unknown_key = 1").is_err());
    }

    /// docs/config.md names every key of every section (a key added without documentation fails).
    #[test]
    fn the_reference_page_documents_every_key() {
        let doc = include_str!("../../docs/config.md");
        let mut full = Config {
            genesis: Some(PathBuf::from("genesis.json")),
            rpc_token: Some(RpcToken("t".into())),
            ..Config::default()
        };
        full.serve.experts.push(ExpertConfig {
            domain: "d".into(),
            model: "m".into(),
            system_prompt: "p".into(),
        });
        full.router = Some(RouterConfig {
            examples: Some(PathBuf::from("e.json")),
            ..RouterConfig::default()
        });
        full.consortium = Some(ConsortiumConfig {
            id: "c".into(),
            trusted_issuers: Vec::new(),
            credential: PathBuf::from("c.jwt"),
            psk: Some(PathBuf::from("k")),
            revocations: default_revocations_file(),
            handshake_timeout_secs: 10,
        });
        let value = toml::Value::try_from(&full).expect("config serializes");
        let mut missing = Vec::new();
        let mut check = |t: &toml::value::Table, section: &str| {
            for (key, v) in t {
                let nested =
                    v.is_table() || v.as_array().is_some_and(|a| a.iter().any(|x| x.is_table()));
                if !nested && !doc.contains(&format!("`{key}`")) {
                    missing.push(format!("{section}{key}"));
                }
            }
        };
        let top = value.as_table().expect("a table");
        check(top, "");
        for section in ["serve", "router", "consortium", "manifests"] {
            let t = top[section].as_table().expect("a section");
            check(t, &format!("{section}."));
            assert!(doc.contains(&format!("`[{section}]`")), "section {section}");
        }
        assert!(doc.contains("`[[serve.experts]]`"));
        let expert = top["serve"]["experts"][0].as_table().expect("an expert");
        check(expert, "serve.experts.");
        assert!(missing.is_empty(), "docs/config.md lacks {missing:?}");
    }

    #[test]
    fn serve_section_parses_and_is_checked() {
        let c = Config::from_toml_str(
            "[serve]\nranges = [\"smollm2-135m-instruct:auto\", \"tiny:2-4\"]\nspan = 5",
        )
        .expect("serve section");
        assert_eq!(
            c.serve.specs().expect("specs"),
            vec![
                ShardSpec {
                    model: "smollm2-135m-instruct".into(),
                    range: None
                },
                ShardSpec {
                    model: "tiny".into(),
                    range: Some((2, 4))
                },
            ]
        );
        assert_eq!((c.serve.span, c.serve.replication), (5, 2));
        for bad in [
            "ranges = [\"tiny\"]",
            "ranges = [\"tiny:4-2\"]",
            "ranges = [\"tiny:a-b\"]",
            "ranges = [\":0-2\"]",
            "ranges = [\"tiny:0-2\", \"tiny:auto\"]",
            "span = 0",
            "shards = 1",
        ] {
            assert!(
                Config::from_toml_str(&format!("[serve]\n{bad}")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn manifests_section_parses_and_is_checked() {
        let did =
            mycel_identity::Did::from_public_key(mycel_identity::Keypair::generate().public());
        let c = Config::from_toml_str(&format!(
            "[manifests]\ntrusted_publishers = [\"{did}\"]\nauto_adopt = false"
        ))
        .expect("manifests section");
        assert_eq!(c.manifests.trusted().expect("DIDs"), vec![did]);
        assert!(!c.manifests.auto_adopt);
        assert_eq!(c.manifests.republish_interval_secs, 60);
        for bad in [
            "trusted_publishers = [\"did:web:example.org\"]",
            "republish_interval_secs = 0",
            "trust = []",
        ] {
            assert!(
                Config::from_toml_str(&format!("[manifests]\n{bad}")).is_err(),
                "{bad}"
            );
        }
        let many: Vec<String> = (0..=crate::manifest::MAX_TRUSTED_PUBLISHERS)
            .map(|_| {
                mycel_identity::Did::from_public_key(mycel_identity::Keypair::generate().public())
                    .to_string()
            })
            .collect();
        let mut c = Config::default();
        c.manifests.trusted_publishers = many;
        assert!(c.validate().is_err());
    }

    #[test]
    fn consortium_section_parses_and_is_checked() {
        let issuer =
            mycel_identity::Did::from_public_key(mycel_identity::Keypair::generate().public());
        let section = |extra: &str| {
            format!(
                "listen = [\"/ip4/127.0.0.1/tcp/0\"]\n[consortium]\nid = \"acme\"\n\
                 trusted_issuers = [\"{issuer}\"]\ncredential = \"member.jwt\"\n{extra}"
            )
        };
        let c = Config::from_toml_str(&section("")).expect("minimal section");
        let cc = c.consortium.expect("consortium mode");
        assert_eq!(cc.revocations, PathBuf::from("revocations.json"));
        assert_eq!(cc.handshake_timeout_secs, 10);
        assert_eq!(cc.psk, None);
        let mut resolved = cc.clone();
        resolved.resolve_paths(Path::new("/data"));
        assert_eq!(resolved.credential, PathBuf::from("/data/member.jwt"));
        assert_eq!(
            resolved.revocations,
            PathBuf::from("/data/revocations.json")
        );
        assert!(Config::from_toml_str(&section("psk = \"swarm.key\"")).is_ok());

        // No issuer, a malformed issuer, an empty id, a zero deadline, an unknown key.
        let no_issuer = "[consortium]\nid = \"acme\"\ntrusted_issuers = []\ncredential = \"m\"";
        assert!(Config::from_toml_str(no_issuer).is_err());
        let bad_issuer =
            "[consortium]\nid = \"acme\"\ntrusted_issuers = [\"did:web:x\"]\ncredential = \"m\"";
        assert!(Config::from_toml_str(bad_issuer).is_err());
        let empty_id = section("").replace("id = \"acme\"", "id = \"\"");
        assert!(Config::from_toml_str(&empty_id).is_err());
        assert!(Config::from_toml_str(&section("handshake_timeout_secs = 0")).is_err());
        assert!(Config::from_toml_str(&section("mode = \"open\"")).is_err());
        // pnet cannot protect QUIC.
        let quic = section("psk = \"swarm.key\"").replace(
            "listen = [\"/ip4/127.0.0.1/tcp/0\"]",
            "listen = [\"/ip4/127.0.0.1/udp/0/quic-v1\"]",
        );
        assert!(Config::from_toml_str(&quic).is_err());
    }
}
