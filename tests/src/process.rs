//! Process set-up for simulations that put many nodes into one process.
//!
//! candle runs CPU matrix work on one process-wide barrier pool: concurrent generations take turns
//! behind one lock, and each operation spin-waits for the pool's worker threads. In a real
//! deployment a node has its process to itself; when 30 nodes share one process on two cores, that
//! pool turns every matrix multiply into a wait for a descheduled worker (measured: about a second
//! per token of the 64-wide `tiny` model instead of well under a millisecond). Simulations therefore
//! run with [`COMPUTE_THREADS_ENV`]` = 1`: each generation computes on its own thread, which is also
//! the right size for `tiny`. The variable is read once, before the first generation, and setting
//! it from inside a running process is not safe, so the binaries re-run themselves with it set.

use std::process::{Command, ExitCode};

/// candle's thread count for CPU compute (`1`: compute inline on the calling thread).
pub const COMPUTE_THREADS_ENV: &str = "CANDLE_NUM_THREADS";

/// Whether this process computes on single threads as simulations need.
pub fn single_threaded_compute() -> bool {
    std::env::var_os(COMPUTE_THREADS_ENV).is_some_and(|v| v == "1")
}

/// When [`COMPUTE_THREADS_ENV`] is not set, runs this same program again with it set to `1` and
/// the same arguments, waits, and returns the child's exit code; returns `None` (carry on in this
/// process) when it is already set or the program cannot be re-run.
pub fn rerun_with_single_threaded_compute() -> Option<ExitCode> {
    if std::env::var_os(COMPUTE_THREADS_ENV).is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let status = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(COMPUTE_THREADS_ENV, "1")
        .status()
        .ok()?;
    // A child killed by a signal has no code: report it as a failed run.
    let code = status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(2);
    Some(ExitCode::from(code))
}
