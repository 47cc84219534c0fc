//! Robustness fuzzing: `cargo run -p mycel-tests --bin fuzz -- [--quick] [--secs 600] [--seed N]
//! [--out dir]`. Attacks a small net on every protocol for a bounded time, prints the figures,
//! writes `fuzz.json`, `fuzz.md` and `fuzz.svg`, and exits 1 when a node crashed, leaked, panicked
//! or lost ledger state (2 when the run itself failed). Re-runs itself with single-threaded
//! compute (see `mycel_tests::process`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mycel_tests::fuzz::{self, FuzzConfig};

/// Robustness fuzzing: random and mutated messages on every p2p protocol, RPC method and OpenAI
/// route, while the nodes must stay up, bounded and consistent.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Short form: 40 s of attack (about 70 s in all); the test suite runs this.
    #[arg(long)]
    quick: bool,
    /// Attack time in seconds (default: 600, or 40 with --quick).
    #[arg(long)]
    secs: Option<u64>,
    /// Seed of the attackers' choices (the same seed sends the same messages; the nodes' timing is
    /// real).
    #[arg(long)]
    seed: Option<u64>,
    /// Multiplies every attack rate (default 1: about 50 messages a second in all).
    #[arg(long)]
    rate: Option<f64>,
    /// Run only these attackers, comma-separated: streams, stalls, peer, http, http-stalls (to find
    /// which one a problem follows; the coverage goal is then missed).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seconds between two fresh identities of the gossip attacker (default 15).
    #[arg(long)]
    rotate_every: Option<u64>,
    /// Models cache holding the expert router's embedding model (all-minilm-l6-v2); without it the
    /// shard node runs no router and the centroid topic has no subscriber.
    #[arg(long, env = "MYCEL_TEST_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Directory for fuzz.json, fuzz.md and fuzz.svg.
    #[arg(long, default_value = "target/simulations")]
    out: PathBuf,
}

fn main() -> ExitCode {
    mycel_tests::report::main(run(Args::parse()))
}

async fn run(args: Args) -> ExitCode {
    let mut cfg = if args.quick {
        FuzzConfig::quick()
    } else {
        FuzzConfig::full()
    };
    if let Some(s) = args.secs {
        cfg.duration = Duration::from_secs(s);
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    if let Some(r) = args.rate {
        cfg.p2p_rate *= r;
        cfg.peer_rate *= r;
        cfg.http_rate *= r;
    }
    if let Some(s) = args.rotate_every {
        cfg.rotate_every = Duration::from_secs(s.max(1));
    }
    if !args.only.is_empty() {
        let mut chosen = Vec::new();
        for name in &args.only {
            match fuzz::Attacker::parse(name) {
                Some(a) => chosen.push(a),
                None => {
                    eprintln!("--only {name}: not one of streams, stalls, peer, http, http-stalls");
                    return ExitCode::from(2);
                }
            }
        }
        cfg.attackers = chosen;
    }
    cfg.models_dir = args.models_dir.or_else(default_models_dir);
    let progress = |line: &str| eprintln!("[fuzz] {line}");
    mycel_tests::report::finish(&args.out, "fuzz", fuzz::run(&cfg, &progress).await)
}

/// The devnet's models cache, where `mycel-node pull` puts the embedding model.
fn default_models_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mycel/dev-data/models"))
}
