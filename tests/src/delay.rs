//! Link delay emulation: a loopback TCP relay that holds every byte for a fixed time in each
//! direction before passing it on.
//!
//! The node has no transport-level delay knob, so the harness puts this relay between two nodes:
//! node A dials `/ip4/127.0.0.1/tcp/<relay port>/p2p/<B>` and the relay connects to B's real
//! listener. Noise still authenticates B end to end; only the timing changes (a ping round trip over
//! the link grows by twice the delay). Only connections made through the relay are slowed; if the
//! nodes also connect directly (another dial, a DHT query), that connection is not.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// Connections one relay carries at once; more are refused.
pub const MAX_RELAY_CONNECTIONS: usize = 16;
/// Chunks in flight per direction (each at most [`RELAY_CHUNK_BYTES`]); a full queue stops reading,
/// so a slow side pushes back instead of growing a buffer.
const RELAY_QUEUE_CHUNKS: usize = 64;
/// Largest chunk read at once.
const RELAY_CHUNK_BYTES: usize = 16 * 1024;

/// A running delay relay; dropping it closes the listener and every relayed connection.
#[derive(Debug)]
pub struct DelayProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    /// Listens on an ephemeral loopback port and relays every connection to `target`, holding bytes
    /// for `delay` in each direction.
    pub async fn start(target: SocketAddr, delay: Duration) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| Error::io("127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("delay relay", e))?;
        let task = tokio::spawn(accept_loop(listener, target, delay));
        Ok(Self { addr, task })
    }

    /// Where the relay listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every relayed connection.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, delay: Duration) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((inbound, _)) = accepted else { continue };
                if conns.len() >= MAX_RELAY_CONNECTIONS {
                    continue;
                }
                conns.spawn(relay(inbound, target, delay));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn relay(inbound: TcpStream, target: SocketAddr, delay: Duration) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_r, in_w) = inbound.into_split();
    let (out_r, out_w) = outbound.into_split();
    tokio::join!(pipe(in_r, out_w, delay), pipe(out_r, in_w, delay));
}

/// Copies `from` to `to`, each chunk leaving `delay` after it arrived.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(RELAY_QUEUE_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; RELAY_CHUNK_BYTES];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
