//! Resumable HTTP(S) downloads into a `.part` file.
//!
//! HTTPS trusts the platform's CA store (rustls-platform-verifier, which honours
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`), so TLS-intercepting proxies with a locally installed CA work.
//! A partial file left by an interrupted transfer is continued with an HTTP `Range` request.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use ureq::tls::{RootCerts, TlsConfig};

use crate::error::{ModelsError, Result};

/// Connect timeout for downloads.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// A body read that stalls this long is treated as an interruption (resumable).
const RECV_BODY_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Maximum redirects followed (index files often redirect to a file host).
const MAX_REDIRECTS: u32 = 5;

/// Read buffer size for streaming bodies to disk.
const CHUNK: usize = 256 * 1024;

/// Largest JSON document accepted from a package index.
pub(crate) const MAX_INDEX_JSON_BYTES: u64 = 16 * 1024 * 1024;

/// Builds the HTTP agent used for every request of this crate.
pub(crate) fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::PlatformVerifier)
                .build(),
        )
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_body(Some(RECV_BODY_STALL_TIMEOUT))
        .max_redirects(MAX_REDIRECTS)
        .http_status_as_error(false)
        .user_agent(concat!("mycel-models/", env!("CARGO_PKG_VERSION")))
        .build();
    config.into()
}

/// Maps a transport error to the crate error: everything before a response is "no network".
pub(crate) fn transport_error(url: &str, e: ureq::Error) -> ModelsError {
    ModelsError::NoNetwork {
        url: url.to_owned(),
        reason: e.to_string(),
    }
}

/// Fetches a small document (index JSON) with an upper size bound.
pub(crate) fn get_text(agent: &ureq::Agent, url: &str, accept: &str) -> Result<String> {
    let resp = agent
        .get(url)
        .header("Accept", accept)
        .call()
        .map_err(|e| transport_error(url, e))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(ModelsError::HttpStatus {
            url: url.to_owned(),
            status,
        });
    }
    resp.into_body()
        .with_config()
        .limit(MAX_INDEX_JSON_BYTES)
        .read_to_string()
        .map_err(|e| transport_error(url, e))
}

/// Downloads `url` into `part`, continuing from the bytes already in `part`.
///
/// `expected_size` bounds the transfer: more bytes than that is an error. On return the
/// file holds the whole body (the caller verifies its hash). On an interruption the bytes
/// received so far stay in `part` for the next attempt.
pub(crate) fn download_resumable(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    expected_size: Option<u64>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<()> {
    let mut have = match std::fs::metadata(part) {
        Ok(m) => m.len(),
        Err(_) => 0,
    };
    if let Some(total) = expected_size {
        if have > total {
            // Cannot be a prefix of the right file: start over.
            std::fs::remove_file(part).map_err(|e| ModelsError::io(part, e))?;
            have = 0;
        } else if have == total {
            return Ok(());
        }
    }
    let mut req = agent.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| transport_error(url, e))?;
    let status = resp.status().as_u16();
    let append = match status {
        200 => false,
        206 => {
            // Only trust a 206 that starts where our file ends.
            let start = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range_start);
            if start != Some(have) {
                return Err(ModelsError::HttpStatus {
                    url: url.to_owned(),
                    status,
                });
            }
            true
        }
        416 if have > 0 => {
            // Our partial file claims more than the server has: restart from zero next time.
            std::fs::remove_file(part).map_err(|e| ModelsError::io(part, e))?;
            return Err(ModelsError::HttpStatus {
                url: url.to_owned(),
                status,
            });
        }
        _ => {
            return Err(ModelsError::HttpStatus {
                url: url.to_owned(),
                status,
            });
        }
    };
    let mut file = if append {
        OpenOptions::new()
            .append(true)
            .open(part)
            .map_err(|e| ModelsError::io(part, e))?
    } else {
        have = 0;
        File::create(part).map_err(|e| ModelsError::io(part, e))?
    };
    let total = expected_size;
    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; CHUNK];
    progress(have, total);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = file.flush();
                return Err(ModelsError::Interrupted {
                    url: url.to_owned(),
                    received: have,
                    reason: e.to_string(),
                });
            }
        };
        have += n as u64;
        if let Some(t) = total
            && have > t
        {
            drop(file);
            let _ = std::fs::remove_file(part);
            return Err(ModelsError::SizeMismatch {
                file: url.to_owned(),
                expected: t,
                actual: have,
            });
        }
        file.write_all(&buf[..n])
            .map_err(|e| ModelsError::io(part, e))?;
        progress(have, total);
    }
    file.sync_all().map_err(|e| ModelsError::io(part, e))?;
    if let Some(t) = total
        && have != t
    {
        return Err(ModelsError::SizeMismatch {
            file: url.to_owned(),
            expected: t,
            actual: have,
        });
    }
    Ok(())
}

/// `bytes 100-199/200` → 100.
fn parse_content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, _) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    start.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(parse_content_range_start("items 1-2/3"), None);
    }
}
