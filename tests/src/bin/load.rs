//! Load test: `cargo run -p mycel-tests --bin load -- [--quick | --short] [--clients 400]
//! [--out dir]`. Prints the figures, writes `load.json`, `load.md` and `load.svg`, and exits 1 on
//! errors or unbounded memory growth (2 when the run itself failed). Re-runs itself with
//! single-threaded compute (see `mycel_tests::process`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mycel_tests::load::{self, LoadConfig};

/// Load test: hundreds of concurrent streaming clients on a 5-node net.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Short form: 200 clients for 40 s.
    #[arg(long)]
    quick: bool,
    /// Test-suite form: 200 clients for 24 s.
    #[arg(long, conflicts_with = "quick")]
    short: bool,
    /// Concurrent streaming clients in all; a quarter use JSON-RPC WebSocket, the rest OpenAI SSE
    /// (default: 400, or 200 with --quick).
    #[arg(long)]
    clients: Option<usize>,
    /// Load time in seconds (default: 120, or 40 with --quick).
    #[arg(long)]
    secs: Option<u64>,
    /// Seed of the clients' choices.
    #[arg(long)]
    seed: Option<u64>,
    /// Directory for load.json, load.md and load.svg.
    #[arg(long, default_value = "target/simulations")]
    out: PathBuf,
}

fn main() -> ExitCode {
    mycel_tests::report::main(run(Args::parse()))
}

async fn run(args: Args) -> ExitCode {
    let mut cfg = if args.quick {
        LoadConfig::quick()
    } else if args.short {
        LoadConfig::short()
    } else {
        LoadConfig::full()
    };
    if let Some(c) = args.clients {
        cfg.ws_clients = c / 4;
        cfg.sse_clients = c - cfg.ws_clients;
    }
    if let Some(s) = args.secs {
        cfg.duration = Duration::from_secs(s);
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    let progress = |line: &str| eprintln!("[load] {line}");
    mycel_tests::report::finish(&args.out, "load", load::run(&cfg, &progress).await)
}
