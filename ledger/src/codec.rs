//! Canonical little-endian encoding helpers (specs/ledger.md §2).
//!
//! [`Reader`] never panics: every read checks the remaining length and returns
//! [`LedgerError::Decode`] on truncation.

use crate::error::{LedgerError, Result};
use crate::types::{AccountId, BlockHash, Credits, JobId};

/// Longest encoded block accepted.
pub const MAX_BLOCK_BYTES: usize = 65_536;
/// Most items in any list (QC signers, Mint recipients, stake table).
pub const MAX_LIST: usize = 256;

/// Appends canonical encodings to a byte vector.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            buf: Vec::with_capacity(cap),
        }
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// u16 LE.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// u32 LE.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// u64 LE.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// u128 LE.
    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Raw bytes (fixed size fields).
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// Credits as u128 LE.
    pub fn credits(&mut self, v: Credits) -> &mut Self {
        self.u128(v.0)
    }
    /// A list count (callers keep lists ≤ [`MAX_LIST`], so it fits in u16).
    pub fn count(&mut self, n: usize) -> &mut Self {
        self.u16(u16::try_from(n).unwrap_or(u16::MAX))
    }
    /// The bytes written.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
    /// Bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
}

/// Reads canonical encodings from a slice, refusing truncation.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Current offset.
    pub fn position(&self) -> usize {
        self.pos
    }
    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(LedgerError::Decode("length overflow"))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or(LedgerError::Decode("truncated input"))?;
        self.pos = end;
        Ok(out)
    }
    /// A fixed array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    /// u16 LE.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// u32 LE.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// u64 LE.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// u128 LE.
    pub fn u128(&mut self) -> Result<u128> {
        Ok(u128::from_le_bytes(self.array()?))
    }
    /// Credits.
    pub fn credits(&mut self) -> Result<Credits> {
        Ok(Credits(self.u128()?))
    }
    /// An account id.
    pub fn account(&mut self) -> Result<AccountId> {
        Ok(AccountId(self.array()?))
    }
    /// A block hash.
    pub fn hash(&mut self) -> Result<BlockHash> {
        Ok(BlockHash(self.array()?))
    }
    /// A job id.
    pub fn job(&mut self) -> Result<JobId> {
        Ok(JobId(self.array()?))
    }
    /// A list count, refused above `max`.
    pub fn count(&mut self, max: usize) -> Result<usize> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(LedgerError::Decode("list longer than its maximum"));
        }
        Ok(n)
    }
    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(LedgerError::Decode("trailing bytes"))
        }
    }
}
