//! Wire encoding of hidden states passed between layer-range shards.
//!
//! ```text
//! offset size field
//! 0      4    magic  b"MYHS"
//! 4      1    version (1)
//! 5      1    dtype: 0 = f32 LE, 1 = f16 LE (IEEE 754 binary16)
//! 6      2    reserved, zero
//! 8      4    position: index of the first token of this chunk in the session (u32 LE)
//! 12     4    seq_len: tokens in the chunk (u32 LE)
//! 16     4    hidden_dim (u32 LE)
//! 20     …    seq_len × hidden_dim values, row-major (token-major)
//! ```
//! Decoders reject a wrong magic/version/dtype, non-zero reserved bytes, a payload length that
//! does not match the header, and sizes above [`MAX_HIDDEN_BYTES`].

use half::f16;

use crate::error::{ModelsError, Result};
use crate::sampling::SplitMix64;

/// Magic prefix.
pub const HIDDEN_MAGIC: [u8; 4] = *b"MYHS";
/// Current format version.
pub const HIDDEN_VERSION: u8 = 1;
/// Header length in bytes.
pub const HIDDEN_HEADER_LEN: usize = 20;
/// Largest encoded message accepted (bounds memory used for a peer's message).
pub const MAX_HIDDEN_BYTES: usize = 64 * 1024 * 1024;
/// Largest hidden dimension accepted.
pub const MAX_HIDDEN_DIM: u32 = 65_536;

/// Value type on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireDType {
    /// 32-bit float: exact, so chained shards reproduce the whole model bit for bit.
    F32,
    /// 16-bit float: half the bytes, small numeric drift.
    F16,
}

impl WireDType {
    fn code(self) -> u8 {
        match self {
            WireDType::F32 => 0,
            WireDType::F16 => 1,
        }
    }
    fn width(self) -> usize {
        match self {
            WireDType::F32 => 4,
            WireDType::F16 => 2,
        }
    }
}

/// Hidden states of a chunk of consecutive tokens, between two layers.
#[derive(Clone, Debug, PartialEq)]
pub struct HiddenStates {
    /// Session position of the first token.
    pub position: u32,
    /// Number of tokens.
    pub seq_len: u32,
    /// Width of each token's vector.
    pub hidden_dim: u32,
    /// `seq_len × hidden_dim` values, token-major.
    pub data: Vec<f32>,
}

impl HiddenStates {
    /// Serializes with the given value type.
    pub fn encode(&self, dtype: WireDType) -> Vec<u8> {
        let mut out = Vec::with_capacity(HIDDEN_HEADER_LEN + self.data.len() * dtype.width());
        out.extend_from_slice(&HIDDEN_MAGIC);
        out.push(HIDDEN_VERSION);
        out.push(dtype.code());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.seq_len.to_le_bytes());
        out.extend_from_slice(&self.hidden_dim.to_le_bytes());
        match dtype {
            WireDType::F32 => {
                for v in &self.data {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            WireDType::F16 => {
                for v in &self.data {
                    out.extend_from_slice(&f16::from_f32(*v).to_le_bytes());
                }
            }
        }
        out
    }

    /// Parses bytes from a peer, checking every header field and the payload length.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |m: &str| Err(ModelsError::HiddenStates(m.to_owned()));
        if bytes.len() > MAX_HIDDEN_BYTES {
            return bad("message exceeds MAX_HIDDEN_BYTES");
        }
        if bytes.len() < HIDDEN_HEADER_LEN {
            return bad("shorter than the header");
        }
        if bytes[0..4] != HIDDEN_MAGIC {
            return bad("wrong magic");
        }
        if bytes[4] != HIDDEN_VERSION {
            return bad("unsupported version");
        }
        let dtype = match bytes[5] {
            0 => WireDType::F32,
            1 => WireDType::F16,
            _ => return bad("unknown dtype"),
        };
        if bytes[6] != 0 || bytes[7] != 0 {
            return bad("reserved bytes are not zero");
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let position = u32_at(8);
        let seq_len = u32_at(12);
        let hidden_dim = u32_at(16);
        if hidden_dim == 0 || hidden_dim > MAX_HIDDEN_DIM || seq_len == 0 {
            return bad("seq_len or hidden_dim out of range");
        }
        let n = (seq_len as usize)
            .checked_mul(hidden_dim as usize)
            .ok_or_else(|| ModelsError::HiddenStates("size overflow".into()))?;
        let payload = &bytes[HIDDEN_HEADER_LEN..];
        if Some(payload.len()) != n.checked_mul(dtype.width()) {
            return bad("payload length does not match the header");
        }
        let data = match dtype {
            WireDType::F32 => payload
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            WireDType::F16 => payload
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        };
        Ok(Self {
            position,
            seq_len,
            hidden_dim,
            data,
        })
    }
}

/// Values in a [`HiddenStates::sketch`].
pub const SKETCH_DIM: usize = 16;

/// Relative L2 distance under which two sketches count as the same computation: honest
/// recomputation on other hardware, thread counts or an f16 wire differs by well under 10⁻³,
/// a different input or different weights by far more than 10⁻¹.
pub const SKETCH_TOLERANCE: f32 = 1e-2;

/// Seed of the sketch's projection directions (part of the commitment format: changing it
/// changes every sketch).
const SKETCH_SEED: u64 = 0x6d79_6365_6c73_6b31;

impl HiddenStates {
    /// A compact fingerprint of these activations for span commitments (specs/models.md,
    /// "Verified spans"): the mean over tokens of each row's projection on [`SKETCH_DIM`] fixed
    /// pseudo-random ±1/√dim directions. Close activations give close sketches
    /// ([`sketches_match`]), so a re-execution can be checked against a committed sketch within
    /// a tolerance where a hash would demand bit equality.
    pub fn sketch(&self) -> [f32; SKETCH_DIM] {
        let dim = self.hidden_dim as usize;
        let mut out = [0f64; SKETCH_DIM];
        if dim == 0 || self.seq_len == 0 {
            return [0.0; SKETCH_DIM];
        }
        let mut rng = SplitMix64::new(SKETCH_SEED ^ u64::from(self.hidden_dim));
        let scale = 1.0 / (dim as f64).sqrt();
        // Column sums first: one pass over the data, then SKETCH_DIM · dim sign flips.
        let mut col = vec![0f64; dim];
        for row in self.data.chunks_exact(dim) {
            for (c, v) in col.iter_mut().zip(row) {
                *c += f64::from(*v);
            }
        }
        for o in out.iter_mut() {
            let mut bits = 0u64;
            for (d, c) in col.iter().enumerate() {
                if d % 64 == 0 {
                    bits = rng.next_u64();
                }
                let sign = if bits >> (d % 64) & 1 == 1 { 1.0 } else { -1.0 };
                *o += sign * c;
            }
        }
        out.map(|v| (v * scale / f64::from(self.seq_len)) as f32)
    }
}

/// Whether two sketches agree within [`SKETCH_TOLERANCE`] (relative L2 distance).
pub fn sketches_match(a: &[f32; SKETCH_DIM], b: &[f32; SKETCH_DIM]) -> bool {
    let norm = |v: &[f32; SKETCH_DIM]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let scale = norm(a).max(norm(b)).max(1e-6);
    diff.is_finite() && diff <= f64::from(SKETCH_TOLERANCE) * scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn f32_round_trip_is_exact(pos in 0u32..10_000, seq in 1u32..8, dim in 1u32..64, seed in any::<u32>()) {
            let data: Vec<f32> = (0..seq * dim).map(|i| ((i ^ seed) as f32).sin() * 3.0).collect();
            let h = HiddenStates { position: pos, seq_len: seq, hidden_dim: dim, data };
            let bytes = h.encode(WireDType::F32);
            prop_assert_eq!(bytes.len(), HIDDEN_HEADER_LEN + (seq * dim) as usize * 4);
            prop_assert_eq!(HiddenStates::decode(&bytes).expect("decode"), h);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = HiddenStates::decode(&bytes);
        }
    }

    #[test]
    fn sketches_tolerate_wire_rounding_and_catch_other_activations() {
        let data: Vec<f32> = (0..3 * 96).map(|i| ((i * 7) as f32).sin() * 4.0).collect();
        let h = HiddenStates {
            position: 0,
            seq_len: 3,
            hidden_dim: 96,
            data,
        };
        let rounded = HiddenStates::decode(&h.encode(WireDType::F16)).expect("decode");
        assert!(sketches_match(&h.sketch(), &rounded.sketch()));
        let mut other = h.clone();
        for v in other.data.iter_mut().step_by(5) {
            *v = -*v;
        }
        assert!(!sketches_match(&h.sketch(), &other.sketch()));
        let mut nan = h.sketch();
        nan[0] = f32::NAN;
        assert!(!sketches_match(&h.sketch(), &nan));
    }

    #[test]
    fn f16_round_trip_is_close_and_header_checked() {
        let h = HiddenStates {
            position: 3,
            seq_len: 2,
            hidden_dim: 2,
            data: vec![1.0, -2.5, 0.1, 1000.0],
        };
        let bytes = h.encode(WireDType::F16);
        assert_eq!(bytes.len(), HIDDEN_HEADER_LEN + 8);
        let d = HiddenStates::decode(&bytes).expect("decode");
        for (a, b) in d.data.iter().zip(&h.data) {
            assert!((a - b).abs() <= b.abs() * 1e-3);
        }
        let mut wrong = bytes.clone();
        wrong[4] = 2;
        assert!(HiddenStates::decode(&wrong).is_err());
        let mut short = bytes.clone();
        short.pop();
        assert!(HiddenStates::decode(&short).is_err());
    }
}
