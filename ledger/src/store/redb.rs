//! The redb [`Store`]. Every table of the ledger database is declared in this module.
//!
//! One [`ChangeSet`] is one write transaction committed with `Durability::Immediate`, so after a
//! crash the file holds exactly the batches whose commit returned.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{ChangeSet, Store, StoredData, Table};
use crate::error::{LedgerError, Result};

/// Encoded blocks by block hash: `hash → seq (u64 LE) ‖ encoding`.
const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");
/// Application order: `seq → block hash`.
const ORDER: TableDefinition<u64, &[u8]> = TableDefinition::new("order");
/// Account frontiers and balances.
const ACCOUNTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("accounts");
/// Pending receives: `recipient ‖ source → amount`.
const PENDING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pending");
/// Escrows by escrow block hash.
const ESCROWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("escrows");
/// Checkpoints: stake tables by epoch (big-endian key).
const EPOCHS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("epochs");
/// Minted epochs → Mint block hash.
const MINTED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("minted");
/// Confirmed block hashes.
const CONFIRMED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("confirmed");
/// Votes: quorum certificates by block hash.
const QCS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("votes");
/// Genesis hash, supply, sequence counter.
const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");

fn def(t: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    match t {
        Table::Accounts => ACCOUNTS,
        Table::Pending => PENDING,
        Table::Escrows => ESCROWS,
        Table::Epochs => EPOCHS,
        Table::Minted => MINTED,
        Table::Confirmed => CONFIRMED,
        Table::Qcs => QCS,
        Table::Meta => META,
    }
}

fn err(op: &'static str) -> impl Fn(redb::Error) -> LedgerError {
    move |e| LedgerError::Store(format!("{op}: {e}"))
}

fn e<E: Into<redb::Error>>(op: &'static str) -> impl Fn(E) -> LedgerError {
    move |x| err(op)(x.into())
}

/// A ledger database file.
pub struct RedbStore {
    db: Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

impl RedbStore {
    /// Opens or creates the database file at `path`. A new file is created under a temporary name
    /// and renamed into place once initialized, so a crash during creation never leaves a torn file.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(".creating");
            let tmp = std::path::PathBuf::from(tmp);
            let _ = std::fs::remove_file(&tmp);
            drop(Self::init(
                Database::create(&tmp).map_err(e("create database"))?,
            )?);
            std::fs::rename(&tmp, path)
                .map_err(|x| LedgerError::Store(format!("rename new database: {x}")))?;
        }
        Self::init(Database::create(path).map_err(e("open database"))?)
    }

    fn init(db: Database) -> Result<Self> {
        let tx = db.begin_write().map_err(e("begin write"))?;
        {
            tx.open_table(BLOCKS).map_err(e("create table"))?;
            tx.open_table(ORDER).map_err(e("create table"))?;
            for t in Table::ALL {
                tx.open_table(def(t)).map_err(e("create table"))?;
            }
        }
        tx.commit().map_err(e("commit"))?;
        Ok(Self { db })
    }
}

impl Store for RedbStore {
    fn commit(&mut self, c: &ChangeSet) -> Result<()> {
        let mut tx = self.db.begin_write().map_err(e("begin write"))?;
        tx.set_durability(redb::Durability::Immediate)
            .map_err(e("durability"))?;
        {
            let mut blocks = tx.open_table(BLOCKS).map_err(e("open blocks"))?;
            let mut order = tx.open_table(ORDER).map_err(e("open order"))?;
            for (hash, seq) in &c.del_blocks {
                blocks
                    .remove(hash.0.as_slice())
                    .map_err(e("delete block"))?;
                order.remove(*seq).map_err(e("delete order"))?;
            }
            let mut value = Vec::new();
            for (hash, seq, bytes) in &c.put_blocks {
                value.clear();
                value.extend_from_slice(&seq.to_le_bytes());
                value.extend_from_slice(bytes);
                blocks
                    .insert(hash.0.as_slice(), value.as_slice())
                    .map_err(e("insert block"))?;
                order
                    .insert(*seq, hash.0.as_slice())
                    .map_err(e("insert order"))?;
            }
        }
        if c.clear_state {
            for t in Table::ALL.iter().filter(|t| t.is_state()) {
                tx.delete_table(def(*t)).map_err(e("clear table"))?;
                tx.open_table(def(*t)).map_err(e("recreate table"))?;
            }
        }
        for t in Table::ALL {
            let dels: Vec<_> = c.del.iter().filter(|(tt, _)| *tt == t).collect();
            let puts: Vec<_> = c.put.iter().filter(|(tt, _, _)| *tt == t).collect();
            if dels.is_empty() && puts.is_empty() {
                continue;
            }
            let mut table = tx.open_table(def(t)).map_err(e("open table"))?;
            for (_, k) in dels {
                table.remove(k.as_slice()).map_err(e("delete"))?;
            }
            for (_, k, v) in puts {
                table
                    .insert(k.as_slice(), v.as_slice())
                    .map_err(e("insert"))?;
            }
        }
        tx.commit().map_err(e("commit"))?;
        Ok(())
    }

    fn load(&self) -> Result<StoredData> {
        let tx = self.db.begin_read().map_err(e("begin read"))?;
        let mut data = StoredData::default();
        let blocks = tx.open_table(BLOCKS).map_err(e("open blocks"))?;
        let order = tx.open_table(ORDER).map_err(e("open order"))?;
        for row in order.iter().map_err(e("iterate order"))? {
            let (seq, hash) = row.map_err(e("read order"))?;
            let value = blocks
                .get(hash.value())
                .map_err(e("read block"))?
                .ok_or_else(|| {
                    LedgerError::Corrupt(format!("order {} names a missing block", seq.value()))
                })?;
            let bytes = value.value();
            if bytes.len() < 8 {
                return Err(LedgerError::Corrupt("short block row".into()));
            }
            data.blocks.push((seq.value(), bytes[8..].to_vec()));
        }
        for t in Table::ALL {
            let table = tx.open_table(def(t)).map_err(e("open table"))?;
            let map = data.tables.entry(t).or_default();
            for row in table.iter().map_err(e("iterate"))? {
                let (k, v) = row.map_err(e("read"))?;
                map.insert(k.value().to_vec(), v.value().to_vec());
            }
        }
        Ok(data)
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read().map_err(e("begin read"))?;
        let t = tx.open_table(def(table)).map_err(e("open table"))?;
        Ok(t.get(key).map_err(e("read"))?.map(|v| v.value().to_vec()))
    }
}
