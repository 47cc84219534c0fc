//! The node's HTTP accept loop: hyper HTTP/1.1 (with WebSocket upgrades) under fixed limits, so
//! slow or silent clients cannot pin connections for ever (found by the fuzz harness: `axum::serve`
//! sets no timer, so unfinished headers and bodies were never timed out).
//!
//! - at most [`MAX_HTTP_CONNECTIONS`] open connections, and [`MAX_HTTP_CONNECTIONS_PER_IP`] from one
//!   non-loopback address; a connection beyond a limit is closed at once;
//! - request headers (and an idle keep-alive connection's next request) must arrive within
//!   [`HEADER_READ_TIMEOUT`];
//! - a request body that sends nothing for [`BODY_IDLE_TIMEOUT`] fails (the handler answers 400 or a
//!   JSON-RPC parse error and the connection closes).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceExt;

/// Most open HTTP connections (WebSockets included).
pub const MAX_HTTP_CONNECTIONS: usize = 1024;
/// Most open HTTP connections from one non-loopback IP address (loopback callers are the operator).
pub const MAX_HTTP_CONNECTIONS_PER_IP: usize = 128;
/// A request's headers must be complete this long after the connection starts waiting for them.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body that yields no data for this long is abandoned.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a shutdown waits for open connections to finish their responses.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Open connections, in all and per address.
#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// The connection limits; [`Slot`]s hold a place until dropped.
#[derive(Clone, Default)]
struct Limits(Arc<Mutex<Open>>);

/// One admitted connection's place in [`Limits`].
struct Slot {
    limits: Limits,
    ip: IpAddr,
}

impl Limits {
    fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let here = open.by_ip.get(&ip).copied().unwrap_or(0);
        if open.total >= MAX_HTTP_CONNECTIONS
            || (!ip.is_loopback() && here >= MAX_HTTP_CONNECTIONS_PER_IP)
        {
            return None;
        }
        open.total += 1;
        *open.by_ip.entry(ip).or_default() += 1;
        Some(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.0.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` fires (or its sender is dropped), then stops accepting
/// and gives open connections [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(listener: TcpListener, app: Router, mut stop: oneshot::Receiver<()>) {
    let limits = Limits::default();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Some(slot) = limits.admit(peer.ip()) else {
            tracing::debug!(%peer, "HTTP connection refused: connection limit");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(|body| {
                    axum::body::Body::new(tower_http::timeout::TimeoutBody::new(
                        BODY_IDLE_TIMEOUT,
                        body,
                    ))
                });
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                app.clone().oneshot(req)
            });
        let conn = graceful.watch(
            http.serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open at shutdown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_cap_each_remote_address_and_the_total() {
        let limits = Limits::default();
        let remote: IpAddr = "192.0.2.7".parse().expect("ip");
        let slots: Vec<Slot> = (0..MAX_HTTP_CONNECTIONS_PER_IP)
            .map(|_| limits.admit(remote).expect("under the per-address cap"))
            .collect();
        assert!(limits.admit(remote).is_none(), "per-address cap");
        let other: IpAddr = "::ffff:192.0.2.8".parse().expect("ip");
        assert!(
            limits.admit(other).is_some(),
            "another address still gets in"
        );
        drop(slots);
        assert!(limits.admit(remote).is_some(), "closing frees the places");
        // Loopback is not capped per address, only in total.
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        let slots: Vec<Slot> = (0..MAX_HTTP_CONNECTIONS)
            .map_while(|_| limits.admit(local))
            .collect();
        assert_eq!(slots.len(), MAX_HTTP_CONNECTIONS);
        assert!(limits.admit(remote).is_none(), "total cap");
        drop(slots);
        assert_eq!(limits.0.lock().expect("lock").total, 0);
    }
}
