//! Q8_0 weight matrices and their product with f32 activations, the CPU forward pass's
//! matmuls when weights are (re)quantized to Q8_0.
//!
//! candle's generic Q8_0 path widens two f16 scales per 32-weight block through a function
//! call and dots one weight row at a time. Here scales are widened to f32 once at load and four
//! rows share each activation block. The arithmetic is exactly that of candle's AVX2
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

/// Weight rows per parallel work item (a multiple of the 4-row kernel).
const CHUNK_ROWS: usize = 32;

/// A Q8_0 matrix `rows × cols` (`cols` a multiple of 32), row-major.
pub(crate) struct Q8Matrix {
    rows: usize,
    cols: usize,
    /// One per block, `rows × cols / 32`.
    scales: Vec<f32>,
    /// `rows × cols / 32` blocks.
    quants: Vec<[i8; BLOCK]>,
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
        let blocks = rows * cols / BLOCK;
        if !cols.is_multiple_of(BLOCK) || data.len() != blocks * BLOCK_BYTES {
            return Err(ModelsError::BadModel(format!(
                "Q8_0 tensor {rows}×{cols} holds {} bytes",
                data.len()
            )));
        }
        let mut scales = Vec::with_capacity(blocks);
        let mut quants = Vec::with_capacity(blocks);
        for b in data.chunks_exact(BLOCK_BYTES) {
            scales.push(f16::from_le_bytes([b[0], b[1]]).to_f32());
            let mut q = [0i8; BLOCK];
            for (q, &byte) in q.iter_mut().zip(&b[2..]) {
                *q = byte as i8;
            }
            quants.push(q);
        }
        Ok(Some(Self {
            rows,
            cols,
            scales,
            quants,
        }))
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
        let bpr = self.cols / BLOCK;
        // Computed transposed (`rows × m`) so that each work item owns a contiguous slice.
        let mut out_t = vec![0f32; self.rows * m];
        {
            let slots: Vec<Mutex<&mut [f32]>> =
                out_t.chunks_mut(CHUNK_ROWS * m).map(Mutex::new).collect();
            candle_core::utils::barrier_pool().execute_chunked(slots.len(), |items| {
                for c in items {
                    let mut dst = slots[c].lock().unwrap_or_else(|e| e.into_inner());
                    self.rows_into(c * CHUNK_ROWS, &a, m, bpr, &mut dst);
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

    /// Rows `first..first + dst.len() / m` against every activation row, into `dst`
    /// (`rows × m`).
    fn rows_into(&self, first: usize, a: &Q8Rows, m: usize, bpr: usize, dst: &mut [f32]) {
        let n = dst.len() / m;
        let row = |r: usize| {
            let r = first + r;
            (
                &self.quants[r * bpr..(r + 1) * bpr],
                &self.scales[r * bpr..(r + 1) * bpr],
            )
        };
        let mut r = 0;
        while r + 4 <= n {
            let w = [row(r), row(r + 1), row(r + 2), row(r + 3)];
            for i in 0..m {
                let ai = (
                    &a.quants[i * bpr..(i + 1) * bpr],
                    &a.scales[i * bpr..(i + 1) * bpr],
                );
                let d = dot4(w, ai);
                for (k, v) in d.into_iter().enumerate() {
                    dst[(r + k) * m + i] = v;
                }
            }
            r += 4;
        }
        for r in r..n {
            let w = row(r);
            for i in 0..m {
                let ai = (
                    &a.quants[i * bpr..(i + 1) * bpr],
                    &a.scales[i * bpr..(i + 1) * bpr],
                );
                dst[r * m + i] = dot4([w, w, w, w], ai)[0];
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

/// One weight row or activation row: its blocks and their scales.
type Row<'a> = (&'a [[i8; BLOCK]], &'a [f32]);

/// Dot products of four weight rows with one activation row.
fn dot4(w: [Row<'_>; 4], a: Row<'_>) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { avx2::dot4(w, a) };
    }
    portable::dot4(w, a)
}

mod portable {
    use super::Row;

    /// Same operations as the AVX2 kernel, lane by lane.
    pub(super) fn dot4(w: [Row<'_>; 4], a: Row<'_>) -> [f32; 4] {
        w.map(|(wq, ws)| {
            let mut acc = [0f32; 8];
            for (((wb, &wd), ab), &ad) in wq.iter().zip(ws).zip(a.0).zip(a.1) {
                let d = wd * ad;
                for (j, acc) in acc.iter_mut().enumerate() {
                    let s: i32 = (4 * j..4 * j + 4)
                        .map(|t| i32::from(wb[t]) * i32::from(ab[t]))
                        .sum();
                    *acc = d.mul_add(s as f32, *acc);
                }
            }
            ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
        })
    }
}

/// The x86-64 kernel. The only unsafe code of the crate: calling a `target_feature` function
/// and unaligned SIMD loads; measured worth it (the matmuls are ~85% of a decode step).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, Row};

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
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

    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot4(w: [Row<'_>; 4], a: Row<'_>) -> [f32; 4] {
        let mut acc = [_mm256_setzero_ps(); 4];
        let n = a.1.len();
        let w = w.map(|(q, s)| (&q[..n], &s[..n]));
        for b in 0..n {
            let av = load(&a.0[b]);
            let ad = a.1[b];
            for (acc, (wq, ws)) in acc.iter_mut().zip(&w) {
                let q = block_dot(load(&wq[b]), av);
                *acc = _mm256_fmadd_ps(_mm256_set1_ps(ws[b] * ad), q, *acc);
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
        let bpr = cols / BLOCK;
        let row = |r: usize| {
            (
                &m.quants[r * bpr..(r + 1) * bpr],
                &m.scales[r * bpr..(r + 1) * bpr],
            )
        };
        let rows = [row(0), row(1), row(2), row(3)];
        let a = (&a.quants[..], &a.scales[..]);
        assert_eq!(
            portable::dot4(rows, a).map(f32::to_bits),
            dot4(rows, a).map(f32::to_bits)
        );
    }

    #[test]
    fn other_types_are_declined() {
        let w = Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        let qt = QTensor::quantize(&w, GgmlDType::Q4_0).unwrap();
        assert!(Q8Matrix::from_qtensor(&qt).unwrap().is_none());
    }
}
