//! The depthwise and small-convolution fast paths and shallow matrix products, written with
//! AVX-512 intrinsics.
//!
//! Why intrinsics: the portable kernel ([`super::depthwise_row`]) compiled for AVX-512 reloaded
//! each tap's weight from memory for every pixel it fed (LLVM folds a load into each FMA), 34
//! loads for 24 multiply-adds of a 3×3 row of 8 pixels, and ran EfficientNet-Lite0's depthwise
//! convolutions at 10–15 G multiply-adds per second, a third of the `gemm` crate's rate on the
//! same core. Here a window row's `K` taps stay in registers and each input column is loaded once
//! for every pixel it feeds (13 loads for 24 multiply-adds). Columns outside the input read as
//! zeros, so edge pixels take the same path; each output still sums its taps row by row, left to
//! right, after the bias (the portable order; a zero column adds `0·w`).

use std::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

use super::{Conv, DepthwiseRow, Dims, LANES, PIXELS, window_rows};

/// Output row `row.oy` of an undilated `K × K` depthwise convolution of horizontal stride `S`,
/// channels in blocks of 16 (`c` a multiple of 16).
#[target_feature(enable = "avx512f")]
pub(super) fn depthwise_row<const K: usize, const S: usize>(row: &DepthwiseRow, out: &mut [f32]) {
    let width = row.out_dims.w;
    for first in (0..row.out_dims.c / LANES).map(|block| block * LANES) {
        let mut ox = 0;
        while ox + PIXELS <= width {
            pixels::<K, S, PIXELS>(row, first, ox, out);
            ox += PIXELS;
        }
        match width - ox {
            0 => {}
            1 => pixels::<K, S, 1>(row, first, ox, out),
            2 => pixels::<K, S, 2>(row, first, ox, out),
            3 => pixels::<K, S, 3>(row, first, ox, out),
            4 => pixels::<K, S, 4>(row, first, ox, out),
            5 => pixels::<K, S, 5>(row, first, ox, out),
            6 => pixels::<K, S, 6>(row, first, ox, out),
            _ => pixels::<K, S, 7>(row, first, ox, out),
        }
    }
}

/// `P` adjacent output pixels `ox..` of channels `first..first + 16`.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(unsafe_code)]
fn pixels<const K: usize, const S: usize, const P: usize>(
    row: &DepthwiseRow,
    first: usize,
    ox: usize,
    out: &mut [f32],
) {
    let DepthwiseRow {
        conv,
        source,
        out_dims,
        oy,
    } = *row;
    let (c, width) = (source.dims.c, source.dims.w as isize);
    let (y0, y1) = window_rows(conv, source.dims, oy);
    let iy0 = oy * conv.stride[0] + y0 - conv.pads[0];
    let x0 = (ox * S) as isize - conv.pads[1] as isize;
    let bias = &conv.bias[first..first + LANES];
    // SAFETY: `bias` holds 16 floats.
    let mut acc = [unsafe { _mm512_loadu_ps(bias.as_ptr()) }; P];
    for ky in y0..y1 {
        let weights = &conv.weights[ky * K * c + first..][..(K - 1) * c + LANES];
        let mut taps = [_mm512_setzero_ps(); K];
        for (kx, tap) in taps.iter_mut().enumerate() {
            // SAFETY: `kx·c + 16 ≤ weights.len()` for `kx < K`.
            *tap = unsafe { _mm512_loadu_ps(weights.as_ptr().add(kx * c)) };
        }
        let line = &source.data[source.at(iy0 + ky - y0, 0)..][..source.dims.w * c];
        for column in 0..(P - 1) * S + K {
            let ix = x0 + column as isize;
            let x: __m512 = if (0..width).contains(&ix) {
                let at = ix as usize * c + first;
                // SAFETY: `ix < width` and `first + 16 ≤ c`, so `at + 16 ≤ width·c = line.len()`.
                unsafe { _mm512_loadu_ps(line.as_ptr().add(at)) }
            } else {
                _mm512_setzero_ps()
            };
            for (p, acc) in acc.iter_mut().enumerate() {
                if column >= p * S && column - p * S < K {
                    *acc = _mm512_fmadd_ps(x, taps[column - p * S], *acc);
                }
            }
        }
    }
    let pixels = &mut out[(oy * out_dims.w + ox) * c + first..][..(P - 1) * c + LANES];
    for (p, acc) in acc.iter().enumerate() {
        // SAFETY: `p·c + 16 ≤ pixels.len()` for `p < P`.
        unsafe { _mm512_storeu_ps(pixels.as_mut_ptr().add(p * c), *acc) };
    }
}

/// Output row `oy` of an ungrouped convolution with few inputs per output (an RGB stem), output
/// channels in blocks of 32 and 16 (`cout` a multiple of 16): per block of [`PIXELS`] pixels,
/// each input value is broadcast against the weight row it multiplies, held in registers for
/// all the pixels. Taps outside the input read as zeros. The portable kernel
/// ([`super::small_with`]) ran MobileNetV2's 3×3 stem (224² × 3 → 112² × 32) in 0.6 ms per image
/// here, 18 G multiply-adds per second.
#[target_feature(enable = "avx512f")]
pub(super) fn small_row(
    conv: &Conv,
    input: &[f32],
    in_dims: Dims,
    out: &mut [f32],
    out_dims: Dims,
    oy: usize,
) {
    let width = out_dims.w;
    let mut ox = 0;
    while ox + PIXELS <= width {
        small_blocks::<PIXELS>(conv, input, in_dims, out, out_dims, [oy, ox]);
        ox += PIXELS;
    }
    match width - ox {
        0 => {}
        1 => small_blocks::<1>(conv, input, in_dims, out, out_dims, [oy, ox]),
        2 => small_blocks::<2>(conv, input, in_dims, out, out_dims, [oy, ox]),
        3 => small_blocks::<3>(conv, input, in_dims, out, out_dims, [oy, ox]),
        4 => small_blocks::<4>(conv, input, in_dims, out, out_dims, [oy, ox]),
        5 => small_blocks::<5>(conv, input, in_dims, out, out_dims, [oy, ox]),
        6 => small_blocks::<6>(conv, input, in_dims, out, out_dims, [oy, ox]),
        _ => small_blocks::<7>(conv, input, in_dims, out, out_dims, [oy, ox]),
    }
}

/// `P` pixels from `[oy, ox]`, every output channel.
#[target_feature(enable = "avx512f")]
#[inline]
fn small_blocks<const P: usize>(
    conv: &Conv,
    input: &[f32],
    in_dims: Dims,
    out: &mut [f32],
    out_dims: Dims,
    pixel: [usize; 2],
) {
    let cout = out_dims.c;
    let mut first = 0;
    while first + 2 * LANES <= cout {
        small_pixels::<2, P>(conv, input, in_dims, out, out_dims, pixel, first);
        first += 2 * LANES;
    }
    if first < cout {
        small_pixels::<1, P>(conv, input, in_dims, out, out_dims, pixel, first);
    }
}

/// `P` pixels from `[oy, ox]`, output channels `first..first + 16·V`.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(unsafe_code, clippy::too_many_arguments)]
fn small_pixels<const V: usize, const P: usize>(
    conv: &Conv,
    input: &[f32],
    in_dims: Dims,
    out: &mut [f32],
    out_dims: Dims,
    [oy, ox]: [usize; 2],
    first: usize,
) {
    let kw = conv.kernel[1];
    let (cin, cout) = (in_dims.c, out_dims.c);
    let (y0, y1) = window_rows(conv, in_dims, oy);
    let bias = &conv.bias[first..][..V * LANES];
    let mut acc = [[_mm512_setzero_ps(); V]; P];
    for pixel in acc.iter_mut() {
        for (v, lanes) in pixel.iter_mut().enumerate() {
            // SAFETY: `v·16 + 16 ≤ bias.len()`.
            *lanes = unsafe { _mm512_loadu_ps(bias.as_ptr().add(v * LANES)) };
        }
    }
    let x0 = (ox * conv.stride[1]) as isize - conv.pads[1] as isize;
    for ky in y0..y1 {
        let iy = oy * conv.stride[0] + ky * conv.dilation[0] - conv.pads[0];
        let line = &input[iy * in_dims.w * cin..][..in_dims.w * cin];
        for kx in 0..kw {
            let mut at = [None; P];
            for (p, at) in at.iter_mut().enumerate() {
                let ix = x0 + (p * conv.stride[1] + kx * conv.dilation[1]) as isize;
                if (0..in_dims.w as isize).contains(&ix) {
                    *at = Some(ix as usize * cin);
                }
            }
            // Every pixel's tap inside the input: one slice, read without checks.
            let step = conv.stride[1] * cin;
            let inside = match (at[0], at[P - 1]) {
                (Some(start), Some(_)) => Some(&line[start..start + (P - 1) * step + cin]),
                _ => None,
            };
            let rows = &conv.weights[(ky * kw + kx) * cin * cout + first..]
                [..(cin - 1) * cout + V * LANES];
            for ci in 0..cin {
                let mut w = [_mm512_setzero_ps(); V];
                for (v, lanes) in w.iter_mut().enumerate() {
                    // SAFETY: `ci·cout + v·16 + 16 ≤ rows.len()` for `ci < cin`, `v < V`.
                    *lanes = unsafe { _mm512_loadu_ps(rows.as_ptr().add(ci * cout + v * LANES)) };
                }
                if let Some(span) = inside {
                    for (p, pixel) in acc.iter_mut().enumerate() {
                        // SAFETY: `p·step + ci < (P − 1)·step + cin = span.len()`.
                        let x = _mm512_set1_ps(unsafe { *span.as_ptr().add(p * step + ci) });
                        for (lanes, w) in pixel.iter_mut().zip(&w) {
                            *lanes = _mm512_fmadd_ps(x, *w, *lanes);
                        }
                    }
                } else {
                    for (pixel, at) in acc.iter_mut().zip(&at) {
                        let x = match at {
                            Some(at) => _mm512_set1_ps(line[at + ci]),
                            None => _mm512_setzero_ps(),
                        };
                        for (lanes, w) in pixel.iter_mut().zip(&w) {
                            *lanes = _mm512_fmadd_ps(x, *w, *lanes);
                        }
                    }
                }
            }
        }
    }
    let pixels = &mut out[(oy * out_dims.w + ox) * cout + first..][..(P - 1) * cout + V * LANES];
    for (p, pixel) in acc.iter().enumerate() {
        for (v, lanes) in pixel.iter().enumerate() {
            // SAFETY: `p·cout + v·16 + 16 ≤ pixels.len()` for `p < P`, `v < V`.
            unsafe { _mm512_storeu_ps(pixels.as_mut_ptr().add(p * cout + v * LANES), *lanes) };
        }
    }
}

/// Inputs per output up to which [`product`] replaces `gemm`: with `k ≤ 32` the weights
/// (`k × n`, at most 24 KB for `n = 192`) stay in L1 and a call of `gemm` spends as much on
/// setting up and packing as on multiplying (MobileNetV2's 112² × 16 → 96 expansion ran at 38 G
/// multiply-adds per second through it).
pub(super) const PRODUCT_DEPTH: usize = 32;

/// `c[i][j] = Σ_p a[i][p]·b[p][j]`, `p` ascending from zero, for `m` rows and `n` columns (`a`
/// rows `a_stride` apart, `b` rows `b_stride` apart, `c` rows `c_stride` apart; `n` a multiple
/// of 16): 4 rows × 96 columns of accumulators in registers, each weight row loaded once for the
/// 4 rows.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) fn product(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_stride: usize,
    b: &[f32],
    b_stride: usize,
    c: &mut [f32],
    c_stride: usize,
) {
    let mut row = 0;
    while row + 4 <= m {
        product_rows::<4>(
            k,
            n,
            &a[row * a_stride..],
            a_stride,
            b,
            b_stride,
            &mut c[row * c_stride..],
            c_stride,
        );
        row += 4;
    }
    match m - row {
        0 => {}
        1 => product_rows::<1>(
            k,
            n,
            &a[row * a_stride..],
            a_stride,
            b,
            b_stride,
            &mut c[row * c_stride..],
            c_stride,
        ),
        2 => product_rows::<2>(
            k,
            n,
            &a[row * a_stride..],
            a_stride,
            b,
            b_stride,
            &mut c[row * c_stride..],
            c_stride,
        ),
        _ => product_rows::<3>(
            k,
            n,
            &a[row * a_stride..],
            a_stride,
            b,
            b_stride,
            &mut c[row * c_stride..],
            c_stride,
        ),
    }
}

/// `R` rows of [`product`], every column.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
fn product_rows<const R: usize>(
    k: usize,
    n: usize,
    a: &[f32],
    a_stride: usize,
    b: &[f32],
    b_stride: usize,
    c: &mut [f32],
    c_stride: usize,
) {
    let mut first = 0;
    while first + 6 * LANES <= n {
        product_block::<R, 6>(k, b_stride, a, a_stride, b, c, c_stride, first);
        first += 6 * LANES;
    }
    match (n - first) / LANES {
        0 => {}
        1 => product_block::<R, 1>(k, b_stride, a, a_stride, b, c, c_stride, first),
        2 => product_block::<R, 2>(k, b_stride, a, a_stride, b, c, c_stride, first),
        3 => product_block::<R, 3>(k, b_stride, a, a_stride, b, c, c_stride, first),
        4 => product_block::<R, 4>(k, b_stride, a, a_stride, b, c, c_stride, first),
        _ => product_block::<R, 5>(k, b_stride, a, a_stride, b, c, c_stride, first),
    }
}

/// `R` rows × `16·V` columns from `first`.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(unsafe_code, clippy::too_many_arguments)]
fn product_block<const R: usize, const V: usize>(
    k: usize,
    b_stride: usize,
    a: &[f32],
    a_stride: usize,
    b: &[f32],
    c: &mut [f32],
    c_stride: usize,
    first: usize,
) {
    let rows = &a[..(R - 1) * a_stride + k];
    let weights = &b[first..][..(k - 1) * b_stride + V * LANES];
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for p in 0..k {
        let mut w = [_mm512_setzero_ps(); V];
        for (v, lanes) in w.iter_mut().enumerate() {
            // SAFETY: `p·b_stride + v·16 + 16 ≤ weights.len()` for `p < k`, `v < V`.
            *lanes = unsafe { _mm512_loadu_ps(weights.as_ptr().add(p * b_stride + v * LANES)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: `r·a_stride + p < rows.len()` for `r < R`, `p < k`.
            let x = _mm512_set1_ps(unsafe { *rows.as_ptr().add(r * a_stride + p) });
            for (lanes, w) in row.iter_mut().zip(&w) {
                *lanes = _mm512_fmadd_ps(x, *w, *lanes);
            }
        }
    }
    let out = &mut c[first..][..(R - 1) * c_stride + V * LANES];
    for (r, row) in acc.iter().enumerate() {
        for (v, lanes) in row.iter().enumerate() {
            // SAFETY: `r·c_stride + v·16 + 16 ≤ out.len()` for `r < R`, `v < V`.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(r * c_stride + v * LANES), *lanes) };
        }
    }
}
