//! Writing a simulation's report files: `<stem>.json`, `<stem>.md` and `<stem>.svg` in one
//! directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::error::{Error, Result};

/// Writes the JSON, Markdown and SVG forms of a report into `dir` (created if missing); returns
/// the three paths.
pub fn write(
    dir: &Path,
    stem: &str,
    json: &impl Serialize,
    markdown: &str,
    svg: &str,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let text = serde_json::to_string_pretty(json)
        .map_err(|e| Error::Invalid(format!("report does not serialize: {e}")))?;
    let files = [
        (dir.join(format!("{stem}.json")), text + "\n"),
        (dir.join(format!("{stem}.md")), markdown.to_string()),
        (dir.join(format!("{stem}.svg")), svg.to_string()),
    ];
    let mut out = Vec::new();
    for (path, body) in files {
        std::fs::write(&path, body).map_err(|e| Error::io(&path, e))?;
        out.push(path);
    }
    Ok(out)
}

/// A goal line for Markdown: `✅ met` or `❌ missed`.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// `#[serde(with = "secs")]`: a duration as fractional seconds in a JSON report.
pub mod secs {
    use std::time::Duration;

    /// Serializes `d` as fractional seconds.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// A simulation's result as its binary reports it.
pub trait Report: Serialize {
    /// One paragraph for the terminal.
    fn summary(&self) -> String;
    /// The Markdown report.
    fn to_markdown(&self) -> String;
    /// The SVG chart.
    fn to_svg(&self) -> String;
    /// Whether every goal was met.
    fn goals_met(&self) -> bool;
}

/// The end of a simulation binary: prints the summary, writes the report files into `dir` as
/// `<stem>.*` and turns the outcome into the exit code (0 goals met, 1 a goal missed, 2 the run or
/// the report failed).
pub fn finish<R: Report>(dir: &Path, stem: &str, run: Result<R>) -> ExitCode {
    let report = match run {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{stem} run failed: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{}", report.summary());
    match write(dir, stem, &report, &report.to_markdown(), &report.to_svg()) {
        Ok(paths) => {
            for p in paths {
                println!("wrote {}", p.display());
            }
        }
        Err(e) => {
            eprintln!("cannot write the report: {e}");
            return ExitCode::from(2);
        }
    }
    if report.goals_met() {
        ExitCode::SUCCESS
    } else {
        eprintln!("a goal was missed");
        ExitCode::FAILURE
    }
}

/// The body of a simulation binary's `main`: re-runs itself with single-threaded compute if
/// needed ([`crate::process::rerun_with_single_threaded_compute`]), sends node logs to stderr,
/// and runs `run` on a two-worker runtime.
pub fn main(run: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    if let Some(code) = crate::process::rerun_with_single_threaded_compute() {
        return code;
    }
    init_logs();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(run)
}

/// Node logs go to stderr, errors only unless `RUST_LOG` says otherwise (the simulations make
/// nodes warn a lot, by design).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
