//! The bounded pool of blocks waiting for a dependency (specs/ledger.md §5.3).

use std::collections::{HashMap, VecDeque};

use crate::block::Block;
use crate::error::Dependency;
use crate::params::MAX_UNCHECKED;
use crate::types::BlockHash;

/// Blocks whose signature verified but whose dependency is missing, keyed by that dependency.
/// Holds at most `capacity` blocks; the oldest is evicted first.
#[derive(Debug)]
pub struct Unchecked {
    waiting: HashMap<Dependency, Vec<Block>>,
    fifo: VecDeque<(Dependency, BlockHash)>,
    len: usize,
    capacity: usize,
}

impl Default for Unchecked {
    fn default() -> Self {
        Self::with_capacity(MAX_UNCHECKED)
    }
}

impl Unchecked {
    /// A pool holding at most `capacity` blocks.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            waiting: HashMap::new(),
            fifo: VecDeque::new(),
            len: 0,
            capacity: capacity.max(1),
        }
    }

    /// Number of waiting blocks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Parks a block until `dep` arrives (a duplicate is ignored).
    pub fn insert(&mut self, dep: Dependency, block: Block) {
        let list = self.waiting.entry(dep).or_default();
        if list.iter().any(|b| b.hash() == block.hash()) {
            return;
        }
        self.fifo.push_back((dep, block.hash()));
        list.push(block);
        self.len += 1;
        while self.len > self.capacity {
            let Some((d, h)) = self.fifo.pop_front() else {
                break;
            };
            if let Some(list) = self.waiting.get_mut(&d) {
                let before = list.len();
                list.retain(|b| b.hash() != h);
                self.len -= before - list.len();
                if list.is_empty() {
                    self.waiting.remove(&d);
                }
            }
        }
    }

    /// Removes and returns the blocks waiting for `dep`.
    pub fn take(&mut self, dep: &Dependency) -> Vec<Block> {
        let out = self.waiting.remove(dep).unwrap_or_default();
        self.len -= out.len();
        if !out.is_empty() {
            self.fifo.retain(|(d, _)| d != dep);
        }
        out
    }
}
