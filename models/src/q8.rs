//! Q8_0 weight matrices and their product with f32 activations, the CPU forward pass's
//! matmuls when weights are (re)quantized to Q8_0.
//!
//! candle's generic Q8_0 path widens two f16 scales per 32-weight block through a function
//! call and dots one weight row at a time. Here four rows are stored interleaved block by block
//! (one sequential stream, prefetched ~4 KiB ahead), share each activation block, and have their
//! four scales widened by one F16C instruction. The arithmetic is exactly that of candle's AVX2
//! `vec_dot_q8_0_q8_0` (activations quantized the same way; per block, exact integer dots in
//! eight i32 lanes of four products each, one fused multiply-add into eight f32 lanes, then the
//! same horizontal sum), so outputs are bit-identical to it, and the portable fallback is
//! bit-identical to the AVX2 kernel.

use std::sync::Mutex;

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

use crate::error::{ModelsError, Result};

/// Weights per block.
const BLOCK: usize = 32;

/// Bytes of a GGUF Q8_0 block: an f16 scale, then 32 i8 quants.
const BLOCK_BYTES: usize = 2 + BLOCK;

/// Weight rows per parallel work item (a multiple of [`GROUP`]).
const CHUNK_ROWS: usize = 32;

/// Rows interleaved block by block, so that the kernel reads one sequential stream.
const GROUP: usize = 4;

/// Block `b` of rows `4g..4g + 4`: their scales, then their quants.
#[derive(Clone)]
#[repr(C)]
struct Tile {
    scales: [f16; GROUP],
    quants: [[i8; BLOCK]; GROUP],
}

/// A Q8_0 matrix `rows × cols` (`cols` a multiple of 32), as tiles of four rows (the last
/// group padded with zero rows).
pub(crate) struct Q8Matrix {
    rows: usize,
    cols: usize,
    /// Group-major, then block: `rows.div_ceil(4) × cols / 32`.
    tiles: Vec<Tile>,
}

/// Activations quantized to Q8_0, row-major `m × cols`.
struct Q8Rows {
    /// f16-rounded scales, one per block.
    scales: Vec<f32>,
    quants: Vec<[i8; BLOCK]>,
}

impl Q8Matrix {
    /// Takes a 2-D Q8_0 tensor; None for other types.
    pub(crate) fn from_qtensor(qt: &QTensor) -> Result<Option<Self>> {
        if qt.dtype() != GgmlDType::Q8_0 {
            return Ok(None);
        }
        let (rows, cols) = qt.shape().dims2()?;
        let data = qt.data()?;
        let bpr = cols / BLOCK;
        if !cols.is_multiple_of(BLOCK) || data.len() != rows * bpr * BLOCK_BYTES {
            return Err(ModelsError::BadModel(format!(
                "Q8_0 tensor {rows}×{cols} holds {} bytes",
                data.len()
            )));
        }
        let empty = Tile {
            scales: [f16::ZERO; GROUP],
            quants: [[0; BLOCK]; GROUP],
        };
        let mut tiles = vec![empty; rows.div_ceil(GROUP) * bpr];
        for (i, b) in data.chunks_exact(BLOCK_BYTES).enumerate() {
            let (r, blk) = (i / bpr, i % bpr);
            let tile = &mut tiles[(r / GROUP) * bpr + blk];
            tile.scales[r % GROUP] = f16::from_le_bytes([b[0], b[1]]);
            for (q, &byte) in tile.quants[r % GROUP].iter_mut().zip(&b[2..]) {
                *q = byte as i8;
            }
        }
        Ok(Some(Self { rows, cols, tiles }))
    }

    /// Output width.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Input width.
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// `x` (`m × cols`, row-major) times this matrix transposed: `m × rows`, row-major.
    /// Parallel over weight rows on candle's worker pool.
    pub(crate) fn forward(&self, x: &[f32]) -> Vec<f32> {
        let m = x.len() / self.cols;
        let a = quantize(x, self.cols);
        // Computed transposed (`rows × m`) so that each work item owns a contiguous slice.
        let mut out_t = vec![0f32; self.rows * m];
        {
            let slots: Vec<Mutex<&mut [f32]>> =
                out_t.chunks_mut(CHUNK_ROWS * m).map(Mutex::new).collect();
            candle_core::utils::barrier_pool().execute_chunked(slots.len(), |items| {
                for c in items {
                    let mut dst = slots[c].lock().unwrap_or_else(|e| e.into_inner());
                    self.rows_into(c * CHUNK_ROWS, &a, m, &mut dst);
                }
            });
        }
        if m == 1 {
            return out_t;
        }
        let mut out = vec![0f32; m * self.rows];
        for (r, col) in out_t.chunks_exact(m).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                out[i * self.rows + r] = v;
            }
        }
        out
    }

    /// Rows `first..first + dst.len() / m` (`first` a multiple of 4) against every
    /// activation row, into `dst` (`rows × m`).
    fn rows_into(&self, first: usize, a: &Q8Rows, m: usize, dst: &mut [f32]) {
        let bpr = self.cols / BLOCK;
        let n = dst.len() / m;
        for g in 0..n.div_ceil(GROUP) {
            let first_tile = (first / GROUP + g) * bpr;
            let tiles = &self.tiles[first_tile..first_tile + bpr];
            for i in 0..m {
                let ai = (
                    &a.quants[i * bpr..(i + 1) * bpr],
                    &a.scales[i * bpr..(i + 1) * bpr],
                );
                let d = dot4(tiles, ai);
                for (k, v) in d.into_iter().enumerate().take(n - g * GROUP) {
                    dst[(g * GROUP + k) * m + i] = v;
                }
            }
        }
    }
}

/// Quantizes rows of `cols` values as candle's `BlockQ8_0::from_float` does (scale
/// `max|x| / 127` rounded to f16, quants `round(x / scale)` with the unrounded scale).
fn quantize(x: &[f32], cols: usize) -> Q8Rows {
    let blocks = x.len() / BLOCK;
    let mut scales = Vec::with_capacity(blocks);
    let mut quants = Vec::with_capacity(blocks);
    debug_assert!(cols.is_multiple_of(BLOCK) && x.len().is_multiple_of(cols));
    for xs in x.chunks_exact(BLOCK) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        scales.push(f16::from_f32(d).to_f32());
        let mut q = [0i8; BLOCK];
        for (q, &v) in q.iter_mut().zip(xs) {
            *q = (v * id).round() as i8;
        }
        quants.push(q);
    }
    Q8Rows { scales, quants }
}

/// One activation row: its blocks and their scales.
type Row<'a> = (&'a [[i8; BLOCK]], &'a [f32]);

/// Dot products of the four rows of a group (its tiles) with one activation row.
fn dot4(w: &[Tile], a: Row<'_>) -> [f32; GROUP] {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked just above).
        return unsafe { avx2::dot4(w, a) };
    }
    portable::dot4(w, a)
}

mod portable {
    use super::{GROUP, Row, Tile};

    /// Same operations as the AVX2 kernel, lane by lane.
    pub(super) fn dot4(w: &[Tile], a: Row<'_>) -> [f32; GROUP] {
        let mut acc = [[0f32; 8]; GROUP];
        for ((tile, ab), &ad) in w.iter().zip(a.0).zip(a.1) {
            for ((acc, wb), &wd) in acc.iter_mut().zip(&tile.quants).zip(&tile.scales) {
                let d = wd.to_f32() * ad;
                for (j, acc) in acc.iter_mut().enumerate() {
                    let s: i32 = (4 * j..4 * j + 4)
                        .map(|t| i32::from(wb[t]) * i32::from(ab[t]))
                        .sum();
                    *acc = d.mul_add(s as f32, *acc);
                }
            }
        }
        acc.map(|a| ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])))
    }
}

/// The x86-64 kernel. The only unsafe code of the crate: calling a `target_feature` function,
/// unaligned SIMD loads and prefetch hints (which never fault, whatever the address); measured
/// worth it (the matmuls are ~85% of a decode step).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, GROUP, Row, Tile};

    /// How far ahead (in tiles, ~4 KiB) the kernel asks for weights: the hardware prefetcher
    /// alone left the loop waiting on memory (measured: 54 → ~88 tok/s decoding SmolLM2-135M
    /// on one thread; 16 and 40 tiles were both slower than 32).
    const PREFETCH_TILES: usize = 32;

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    #[target_feature(enable = "avx2,fma")]
    fn load(b: &[i8; BLOCK]) -> __m256i {
        // SAFETY: `b` is 32 readable bytes and `loadu` needs no alignment.
        unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
    }

    /// Eight lanes, each the exact sum of four products of `w` and `a`.
    #[target_feature(enable = "avx2,fma")]
    fn block_dot(w: __m256i, a: __m256i) -> __m256 {
        let abs_w = _mm256_sign_epi8(w, w);
        let signed_a = _mm256_sign_epi8(a, w);
        let pairs = _mm256_maddubs_epi16(abs_w, signed_a);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), pairs))
    }

    #[target_feature(enable = "avx2,fma")]
    fn hsum(x: __m256) -> f32 {
        let r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        let r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }

    /// The four scales of a tile times `ad`, each broadcast to eight lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn scales(tile: &Tile, ad: f32) -> [__m256; GROUP] {
        let bits: [u16; GROUP] = tile.scales.map(|s| s.to_bits());
        let d = _mm_mul_ps(
            _mm_cvtph_ps(_mm_set_epi16(
                0,
                0,
                0,
                0,
                bits[3] as i16,
                bits[2] as i16,
                bits[1] as i16,
                bits[0] as i16,
            )),
            _mm_set1_ps(ad),
        );
        let d = _mm256_castps128_ps256(d);
        [0, 1, 2, 3].map(|r| _mm256_permutevar8x32_ps(d, _mm256_set1_epi32(r)))
    }

    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot4(w: &[Tile], a: Row<'_>) -> [f32; GROUP] {
        let mut acc = [_mm256_setzero_ps(); GROUP];
        for ((tile, ab), &ad) in w.iter().zip(a.0).zip(a.1) {
            let ahead = (tile as *const Tile)
                .wrapping_add(PREFETCH_TILES)
                .cast::<i8>();
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128));
            let av = load(ab);
            let d = scales(tile, ad);
            for ((acc, wb), d) in acc.iter_mut().zip(&tile.quants).zip(d) {
                let q = block_dot(load(wb), av);
                *acc = _mm256_fmadd_ps(d, q, *acc);
            }
        }
        acc.map(|x| hsum(x))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use candle_core::quantized::QMatMul;
    use candle_core::{Device, Module, Tensor};

    use super::*;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Bit-identical to candle's Q8_0 matmul, for one and several activation rows and a row
    /// count that leaves a tail after the 4-row kernel.
    #[test]
    fn matches_candle_bit_for_bit() {
        let (rows, cols) = (70, 96);
        let w =
            Tensor::from_vec(pseudo_random(rows * cols, 1), (rows, cols), &Device::Cpu).unwrap();
        let qt = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let ours = Q8Matrix::from_qtensor(&qt).unwrap().unwrap();
        let theirs = QMatMul::from_qtensor(qt).unwrap();
        for m in [1, 3] {
            let x = pseudo_random(m * cols, 2 + m as u32);
            let xt = Tensor::from_vec(x.clone(), (m, cols), &Device::Cpu).unwrap();
            let expected = theirs.forward(&xt).unwrap().flatten_all().unwrap();
            let expected: Vec<u32> = expected
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let got: Vec<u32> = ours.forward(&x).iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, expected, "m = {m}");
        }
    }

    #[test]
    fn portable_kernel_matches_the_dispatched_one() {
        let cols = 64;
        let w = pseudo_random(4 * cols, 9);
        let qt = QTensor::quantize(
            &Tensor::from_vec(w, (4, cols), &Device::Cpu).unwrap(),
            GgmlDType::Q8_0,
        )
        .unwrap();
        let m = Q8Matrix::from_qtensor(&qt).unwrap().unwrap();
        let a = quantize(&pseudo_random(cols, 10), cols);
        let a = (&a.quants[..], &a.scales[..]);
        assert_eq!(
            portable::dot4(&m.tiles, a).map(f32::to_bits),
            dot4(&m.tiles, a).map(f32::to_bits)
        );
    }

    #[test]
    fn other_types_are_declined() {
        let w = Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        let qt = QTensor::quantize(&w, GgmlDType::Q4_0).unwrap();
        assert!(Q8Matrix::from_qtensor(&qt).unwrap().is_none());
    }
}
