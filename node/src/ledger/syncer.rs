//! Pulls missing ledger data from peers: whole chains by comparing frontiers (on connect and every
//! tick, with one peer at a time), and single blocks a gossiped block waits for. Everything pulled goes
//! through the ledger service's full validation.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use mycel_ledger::{AccountId, BlockHash};
use tokio::sync::mpsc;

use super::LedgerHandle;
use super::wire::{Frontier, SyncRequest, SyncResponse};
use crate::network::NetworkHandle;

/// Dependencies queued for fetching.
pub(super) const FETCH_QUEUE: usize = 256;
/// Sync triggers queued (a peer that connected, or a tick).
pub(super) const TRIGGER_QUEUE: usize = 64;
/// Frontier pages read from one peer per round.
const MAX_FRONTIER_PAGES: usize = 16;
/// Chain requests per round.
const MAX_CHAIN_REQUESTS: usize = 256;
/// A hash fetched recently is not fetched again for this long.
const REFETCH_AFTER: Duration = Duration::from_secs(10);
/// Recently fetched hashes remembered.
const MAX_RECENT: usize = 4096;

pub(super) async fn run(
    ledger: LedgerHandle,
    net: NetworkHandle,
    mut fetch: mpsc::Receiver<(Option<PeerId>, BlockHash)>,
    mut trigger: mpsc::Receiver<Option<PeerId>>,
) {
    let genesis = ledger.genesis().hash();
    let mut recent: HashMap<BlockHash, Instant> = HashMap::new();
    let mut rotation: VecDeque<PeerId> = VecDeque::new();
    loop {
        tokio::select! {
            item = fetch.recv() => {
                let Some((peer, hash)) = item else { return };
                let now = Instant::now();
                if recent.get(&hash).is_some_and(|t| now.duration_since(*t) < REFETCH_AFTER) {
                    continue;
                }
                if recent.len() >= MAX_RECENT {
                    recent.retain(|_, t| now.duration_since(*t) < REFETCH_AFTER);
                    if recent.len() >= MAX_RECENT {
                        recent.clear();
                    }
                }
                recent.insert(hash, now);
                let peer = match peer {
                    Some(p) => p,
                    None => match next_peer(&net, &mut rotation).await {
                        Some(p) => p,
                        None => continue,
                    },
                };
                if let Ok(SyncResponse::Blocks(blocks)) =
                    net.sync(peer, SyncRequest::Block { hash: hash.0 }).await
                    && !blocks.is_empty()
                {
                    let _ = ledger.apply_synced(blocks, peer).await;
                }
            }
            t = trigger.recv() => {
                let Some(t) = t else { return };
                let peer = match t {
                    Some(p) => Some(p),
                    None => next_peer(&net, &mut rotation).await,
                };
                if let Some(peer) = peer
                    && let Err(e) = sync_with(&ledger, &net, peer, genesis).await
                {
                    tracing::debug!(%peer, error = %e, "ledger sync round failed");
                }
            }
        }
    }
}

/// Round-robin over connected peers.
async fn next_peer(net: &NetworkHandle, rotation: &mut VecDeque<PeerId>) -> Option<PeerId> {
    if rotation.is_empty() {
        let peers = net.peers().await.ok()?;
        rotation.extend(peers.into_iter().map(|p| p.peer_id));
    }
    rotation.pop_front()
}

/// Reads the peer's frontiers and pulls every chain on which it is ahead.
async fn sync_with(
    ledger: &LedgerHandle,
    net: &NetworkHandle,
    peer: PeerId,
    genesis: [u8; 32],
) -> crate::Result<()> {
    let mut after = None;
    let mut theirs: Vec<Frontier> = Vec::new();
    for _ in 0..MAX_FRONTIER_PAGES {
        match net.sync(peer, SyncRequest::Frontiers { after }).await? {
            SyncResponse::Frontiers {
                genesis: g,
                entries,
                more,
            } => {
                if g != genesis {
                    return Err(crate::NodeError::Ledger(
                        "peer is on another network (genesis differs)".into(),
                    ));
                }
                after = entries.last().map(|f| f.account);
                theirs.extend(entries);
                if !more || after.is_none() {
                    break;
                }
            }
            SyncResponse::Error(e) => return Err(crate::NodeError::Ledger(e)),
            SyncResponse::Blocks(_) => {
                return Err(crate::NodeError::Ledger("unexpected sync answer".into()));
            }
        }
    }
    let ours = ledger
        .heights(theirs.iter().map(|f| AccountId(f.account)).collect())
        .await?;
    let mut requests = 0;
    for (f, mine) in theirs.iter().zip(ours) {
        // Accounts without a chain here start at height 0 (genesis accounts at 1, their 0 is virtual).
        let mut next = mine.map_or(0, |h| h + 1);
        while next <= f.height && requests < MAX_CHAIN_REQUESTS {
            requests += 1;
            let SyncResponse::Blocks(blocks) = net
                .sync(
                    peer,
                    SyncRequest::Chain {
                        account: f.account,
                        from_height: next,
                    },
                )
                .await?
            else {
                break;
            };
            if blocks.is_empty() {
                break;
            }
            ledger.apply_synced(blocks, peer).await?;
            let now = ledger
                .heights(vec![AccountId(f.account)])
                .await?
                .pop()
                .flatten();
            let reached = now.map_or(0, |h| h + 1);
            if reached <= next {
                // Nothing applied (a fork, or a gap filled later by fetches): leave it to later rounds.
                break;
            }
            next = reached;
        }
    }
    Ok(())
}
