//! An in-memory [`Store`] for tests and simulations.

use std::collections::BTreeMap;

use super::{ChangeSet, Store, StoredData, Table};
use crate::error::Result;

/// Keeps everything in maps; commits are trivially atomic.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    blocks: BTreeMap<u64, Vec<u8>>,
    tables: BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>,
    commits: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of commits so far.
    pub fn commits(&self) -> u64 {
        self.commits
    }
}

impl Store for MemoryStore {
    fn commit(&mut self, c: &ChangeSet) -> Result<()> {
        for (_, seq) in &c.del_blocks {
            self.blocks.remove(seq);
        }
        for (_, seq, bytes) in &c.put_blocks {
            self.blocks.insert(*seq, bytes.clone());
        }
        if c.clear_state {
            for t in Table::ALL.iter().filter(|t| t.is_state()) {
                self.tables.remove(t);
            }
        }
        for (t, k) in &c.del {
            if let Some(m) = self.tables.get_mut(t) {
                m.remove(k);
            }
        }
        for (t, k, v) in &c.put {
            self.tables
                .entry(*t)
                .or_default()
                .insert(k.clone(), v.clone());
        }
        self.commits += 1;
        Ok(())
    }

    fn load(&self) -> Result<StoredData> {
        Ok(StoredData {
            blocks: self.blocks.iter().map(|(s, b)| (*s, b.clone())).collect(),
            tables: self.tables.clone(),
        })
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tables.get(&table).and_then(|m| m.get(key)).cloned())
    }
}
