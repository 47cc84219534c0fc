//! Pulls a registry model into a cache directory, printing progress.
//!
//! `cargo run -p mycel-models --example pull -- <model id> <cache dir> [source path]`
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use mycel_models::{Registry, Stage, pull};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let id = args
        .next()
        .ok_or("usage: pull <model id> <cache dir> [source path]")?;
    let cache: PathBuf = args.next().ok_or("missing cache dir")?.into();
    let source: Option<PathBuf> = args.next().map(Into::into);
    let reg = Registry::load_default()?;
    let entry = reg.get(&id)?;
    let t = std::time::Instant::now();
    let mut last_pct = u64::MAX;
    let m = pull(entry, &cache, source.as_deref(), |p| {
        let pct = p.total.map(|t| p.done * 100 / t.max(1)).unwrap_or(0);
        if pct / 10 != last_pct / 10 || p.stage == Stage::Done {
            eprintln!("{:?} {} {}% ({} bytes)", p.stage, p.file, pct, p.done);
            last_pct = pct;
        }
    })?;
    println!(
        "{} verified in {:.1}s at {}",
        id,
        t.elapsed().as_secs_f64(),
        m.dir().display()
    );
    Ok(())
}
