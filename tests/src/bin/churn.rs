//! Churn simulation: `cargo run -p mycel-tests --bin churn -- [--quick | --short] [--nodes 30]
//! [--no-ledger | --paid-jobs] [--out dir]`. Prints the figures, writes `churn.json`, `churn.md`
//! and `churn.svg`, and exits 1 when a goal is missed (2 when the run itself failed). Re-runs itself with single-threaded
//! compute (see `mycel_tests::process`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mycel_tests::churn::{self, ChurnConfig};

/// Churn simulation: replicas leave and join in waves while clients keep asking.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Short form: 30 replicas, 3 waves 20 s apart (about 2 minutes with set-up).
    #[arg(long)]
    quick: bool,
    /// Test-suite form: 12 replicas, 2 waves 18 s apart (about a minute).
    #[arg(long, conflicts_with = "quick")]
    short: bool,
    /// Replica nodes (providers of `tiny`; default: 30, or 12 with --short).
    #[arg(long)]
    nodes: Option<usize>,
    /// Client (forwarder) nodes the queries enter through.
    #[arg(long)]
    clients: Option<usize>,
    /// Churn waves (default: 10, or 3 with --quick).
    #[arg(long)]
    waves: Option<usize>,
    /// Seconds between waves (default: 30, or 20 with --quick).
    #[arg(long)]
    interval: Option<u64>,
    /// Heartbeat interval of every node, in seconds.
    #[arg(long)]
    heartbeat: Option<u64>,
    /// Seed of the plan (victims, joiners, query targets).
    #[arg(long)]
    seed: Option<u64>,
    /// Run the nodes without a ledger (no wallet traffic, no ledger goals).
    #[arg(long)]
    no_ledger: bool,
    /// The clients hold credits and pay the replicas for every job they forward.
    #[arg(long, conflicts_with = "no_ledger")]
    paid_jobs: bool,
    /// Seconds between two wallet sends.
    #[arg(long)]
    send_interval: Option<f64>,
    /// Directory for churn.json, churn.md and churn.svg.
    #[arg(long, default_value = "target/simulations")]
    out: PathBuf,
}

fn main() -> ExitCode {
    mycel_tests::report::main(run(Args::parse()))
}

async fn run(args: Args) -> ExitCode {
    let mut cfg = if args.quick {
        ChurnConfig::quick()
    } else if args.short {
        ChurnConfig::short()
    } else {
        ChurnConfig::full()
    };
    if let Some(n) = args.nodes {
        cfg.nodes = n;
    }
    if let Some(c) = args.clients {
        cfg.clients = c;
    }
    if let Some(w) = args.waves {
        cfg.waves = w;
    }
    if let Some(s) = args.interval {
        cfg.wave_interval = std::time::Duration::from_secs(s);
    }
    if let Some(h) = args.heartbeat {
        cfg.heartbeat_secs = h;
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    cfg.ledger = !args.no_ledger;
    cfg.paid_jobs = args.paid_jobs;
    if let Some(s) = args.send_interval {
        match std::time::Duration::try_from_secs_f64(s) {
            Ok(d) => cfg.traffic.interval = d,
            Err(e) => {
                eprintln!("--send-interval {s}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let progress = |line: &str| eprintln!("[churn] {line}");
    mycel_tests::report::finish(&args.out, "churn", churn::run(&cfg, &progress).await)
}
