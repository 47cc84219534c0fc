//! Writing a simulation's report files: `<stem>.json`, `<stem>.md` and `<stem>.svg` in one
//! directory.

use std::path::{Path, PathBuf};

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
