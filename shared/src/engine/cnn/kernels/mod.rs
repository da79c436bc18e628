//! The CPU kernels of the lowered plan, on NHWC tensors of one image.
//!
//! Matrix products (1×1 and image-to-rows convolutions) go through the `gemm` crate: on this
//! project's 2-core AVX-512 machine it ran MobileNetV2's 1×1 shapes 1.6× faster than
//! `matrixmultiply` in total (5.3 vs 8.5 ms per image, `m × k × n` from 12544×32×16 to
//! 49×320×1280, one thread), and 1.5× faster than a register-blocked 6 × 64 kernel of ours
//! without packing (3.6 vs 5.5 ms over the distinct shapes, warm caches; ours only kept up where
//! k ≤ 32). tract's depthwise convolution is scalar code, so depthwise
//! convolutions, convolutions with few inputs per output (an RGB stem: image-to-rows of 3
//! channels cost more than the product), dense layers on one vector and pooling are written
//! here: loops over contiguous channels that the compiler vectorises, built for AVX-512 and AVX2
//! with FMA and chosen at run time (as `segment::quickshift` does), with a portable build
//! (wasm32's simd128 included) that multiplies and adds separately. On AVX-512 the depthwise and
//! small convolutions' fast paths are written in intrinsics ([`avx512`]): the compiler's code for
//! them reloaded weights per multiply-add; so are matrix products of depth ≤ 32, where `gemm`'s
//! set-up and packing cost as much as its multiplying.
//!
//! A pointwise convolution feeding a depthwise one runs band by band ([`Op::Expanded`]): the
//! expanded rows a band of output rows needs are computed into an L2-sized scratch and read
//! there, instead of a tensor of up to 4.8 MB (MobileNetV2's 112×112×96) written to the arena and
//! read back; 3–6 % per image on two threads.
//!
//! **Invariant:** a result depends only on the image and the layer's shapes: products run one
//! image at a time in row blocks and bands fixed by the layer, never by the batch or the thread
//! count; [`dense_rows`] serves several images at once, each output summed as for one.

use super::lower::{Act, Conv, ConvKind, Dims, Op, Pool, TensorId, TensorInfo};
use crate::{Error, Result};

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Rows of output one matrix product covers, so a block (and its image-to-rows scratch) stays in
/// the core's L2 cache while its epilogue (bias, residual, activation) runs.
pub(super) fn block_rows(cout: usize) -> usize {
    (65_536 / cout.max(1)).max(64).next_multiple_of(16)
}

/// Floats of scratch a convolution needs (image-to-rows of one block).
pub(super) fn conv_scratch(conv: &Conv, tensors: &[TensorInfo]) -> usize {
    if conv.kind != ConvKind::General {
        return 0;
    }
    let cin = tensors[conv.input].dims.c;
    let out = tensors[conv.output].dims;
    let k = conv.kernel[0] * conv.kernel[1] * cin / conv.groups;
    block_rows(out.c).min(out.h * out.w) * k
}

/// Floats of the expanded tensor that one band of an [`Op::Expanded`] holds: about 256 KB,
/// so the band stays in L2 between the pointwise product that writes it and the depthwise
/// convolution that reads it.
const BAND_FLOATS: usize = 65_536;

/// Output rows of one band of an [`Op::Expanded`] and the expanded rows it holds.
fn band(depthwise: &Conv, mid: Dims, out_h: usize) -> (usize, usize) {
    let (span, s) = (depthwise.span(0), depthwise.stride[0]);
    let fit = BAND_FLOATS / (mid.w * mid.c).max(1);
    let rows = (fit.saturating_sub(span) / s + 1).clamp(1, out_h.max(1));
    (rows, ((rows - 1) * s + span).min(mid.h))
}

/// Floats of scratch an [`Op::Expanded`] needs: one band of the expanded tensor.
pub(super) fn expanded_scratch(expand: &Conv, depthwise: &Conv, tensors: &[TensorInfo]) -> usize {
    let mid = tensors[expand.output].dims;
    let out_h = tensors[depthwise.output].dims.h;
    band(depthwise, mid, out_h).1 * mid.w * mid.c
}

/// The arena seen by one op: its output slice, and the tensors before and after it.
pub(super) struct Frame<'a> {
    before: &'a [f32],
    after: &'a [f32],
    after_start: usize,
    tensors: &'a [TensorInfo],
}

impl<'a> Frame<'a> {
    /// Split `arena` around `output`.
    pub fn split(
        arena: &'a mut [f32],
        tensors: &'a [TensorInfo],
        output: TensorId,
    ) -> Result<(Self, &'a mut [f32])> {
        let info = &tensors[output];
        let end = info.offset + info.dims.len();
        if end > arena.len() {
            return Err(Error::Inference(format!(
                "tensor `{}` lies outside the arena",
                info.name
            )));
        }
        let (before, rest) = arena.split_at_mut(info.offset);
        let (out, after) = rest.split_at_mut(info.dims.len());
        Ok((
            Self {
                before,
                after,
                after_start: end,
                tensors,
            },
            out,
        ))
    }

    /// An input tensor's floats (never overlapping the output: the arena planner's invariant).
    pub fn get(&self, tensor: TensorId) -> Result<&'a [f32]> {
        let info = &self.tensors[tensor];
        let (start, end) = (info.offset, info.offset + info.dims.len());
        if end <= self.before.len() {
            Ok(&self.before[start..end])
        } else if start >= self.after_start && end - self.after_start <= self.after.len() {
            Ok(&self.after[start - self.after_start..end - self.after_start])
        } else {
            Err(Error::Inference(format!(
                "tensor `{}` overlaps the output it feeds",
                info.name
            )))
        }
    }

    fn dims(&self, tensor: TensorId) -> Dims {
        self.tensors[tensor].dims
    }
}

/// Run one op of one image.
pub(super) fn run(op: &Op, frame: &Frame, out: &mut [f32], scratch: &mut [f32]) -> Result<()> {
    match op {
        Op::Conv(conv) => {
            let input = frame.get(conv.input)?;
            let residual = conv.residual.map(|r| frame.get(r)).transpose()?;
            let (in_dims, out_dims) = (frame.dims(conv.input), frame.dims(conv.output));
            match conv.kind {
                ConvKind::Depthwise | ConvKind::Small => {
                    direct(Direct::Conv {
                        conv,
                        source: Source {
                            data: input,
                            dims: in_dims,
                            origin: 0,
                        },
                        out,
                        out_dims,
                        rows: 0..out_dims.h,
                        residual,
                    });
                    Ok(())
                }
                ConvKind::Pointwise | ConvKind::General => {
                    convolve(conv, input, in_dims, out, out_dims, residual, scratch)
                }
            }
        }
        Op::Expanded { expand, depthwise } => {
            let input = frame.get(expand.input)?;
            let residual = depthwise.residual.map(|r| frame.get(r)).transpose()?;
            let dims = [expand.input, expand.output, depthwise.output].map(|t| frame.dims(t));
            expanded(expand, depthwise, input, dims, out, residual, scratch)
        }
        Op::MaxPool(pool) | Op::AveragePool(pool) => {
            let pooling = if matches!(op, Op::MaxPool(_)) {
                max_pool
            } else {
                average_pool
            };
            let (input, in_dims) = (frame.get(pool.input)?, frame.dims(pool.input));
            pooling(pool, input, in_dims, out, frame.dims(pool.output));
            Ok(())
        }
        Op::GlobalAveragePool { input, .. } => {
            let (x, dims) = (frame.get(*input)?, frame.dims(*input));
            out.fill(0.0);
            for pixel in x.chunks_exact(dims.c) {
                out.iter_mut().zip(pixel).for_each(|(o, v)| *o += v);
            }
            let count = (dims.h * dims.w) as f32;
            out.iter_mut().for_each(|o| *o /= count);
            Ok(())
        }
        Op::Affine {
            input,
            scale,
            shift,
            act,
            ..
        } => {
            let x = frame.get(*input)?;
            let c = scale.len();
            for (o, i) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                for ((o, i), (s, t)) in o.iter_mut().zip(i).zip(scale.iter().zip(shift)) {
                    *o = i * s + t;
                }
            }
            activate(out, *act);
            Ok(())
        }
        Op::Add { a, b, act, .. } => {
            let (a, b) = (frame.get(*a)?, frame.get(*b)?);
            out.iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(o, (a, b))| *o = a + b);
            activate(out, *act);
            Ok(())
        }
        Op::Activation { input, act, .. } => {
            out.copy_from_slice(frame.get(*input)?);
            activate(out, *act);
            Ok(())
        }
        Op::Concat { inputs, .. } => {
            let c = out.len() / pixels(frame.dims(inputs[0]));
            let mut offset = 0;
            for &input in inputs {
                let (x, width) = (frame.get(input)?, frame.dims(input).c);
                for (o, i) in out.chunks_exact_mut(c).zip(x.chunks_exact(width)) {
                    o[offset..offset + width].copy_from_slice(i);
                }
                offset += width;
            }
            Ok(())
        }
        Op::Flatten { input, .. } => {
            let (x, dims) = (frame.get(*input)?, frame.dims(*input));
            transpose(x, dims.h * dims.w, dims.c, out);
            Ok(())
        }
        Op::Dense { input, .. } => dense_rows(op, &mut [(frame.get(*input)?, out)]),
        Op::Lrn {
            input,
            size,
            alpha,
            beta,
            bias,
            ..
        } => {
            let (x, c) = (frame.get(*input)?, frame.dims(*input).c);
            // ONNX: channels c − ⌊(size−1)/2⌋ ..= c + ⌈(size−1)/2⌉.
            let (below, above) = ((size - 1) / 2, size / 2);
            let scale = alpha / *size as f32;
            for (o, i) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                for channel in 0..c {
                    let from = channel.saturating_sub(below);
                    let to = (channel + above + 1).min(c);
                    let square: f32 = i[from..to].iter().map(|v| v * v).sum();
                    o[channel] = i[channel] / (bias + scale * square).powf(*beta);
                }
            }
            Ok(())
        }
        Op::Softmax { input, .. } => {
            let x = frame.get(*input)?;
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            out.iter_mut()
                .zip(x)
                .for_each(|(o, v)| *o = (v - max).exp());
            let sum: f32 = out.iter().sum();
            out.iter_mut().for_each(|o| *o /= sum);
            Ok(())
        }
    }
}

/// An [`Op::Dense`] over one image or several at once (`rows`: each image's input vector and
/// output): the weights stream from memory once per group of images (8 in the portable loop, 4
/// in the AVX-512 product) instead of once per image (MobileNetV2's 1280 × 1000 classifier is
/// 5 MB). Each output starts at zero and adds its terms `k` ascending, whatever the group: an
/// image's result does not depend on the images beside it.
pub(super) fn dense_rows(op: &Op, rows: &mut [(&[f32], &mut [f32])]) -> Result<()> {
    let Op::Dense {
        weights, bias, act, ..
    } = op
    else {
        return Err(Error::Inference("not a dense layer".into()));
    };
    if rows
        .iter()
        .any(|(x, out)| out.len() != bias.len() || weights.len() != x.len() * out.len())
    {
        return Err(Error::Inference("dense weights do not fit".into()));
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        dense_rows_avx512(rows, weights);
        for (_, out) in rows.iter_mut() {
            epilogue(out, Some(bias), None, *act);
        }
        return Ok(());
    }
    let mut rows: Vec<(&[f32], &mut [f32])> =
        rows.iter_mut().map(|(x, out)| (&**x, &mut **out)).collect();
    direct(Direct::DenseRows {
        rows: &mut rows,
        weights,
        bias,
        act: *act,
    });
    Ok(())
}

/// [`dense_rows`] on AVX-512: the images' vectors gathered into one matrix for
/// [`avx512::product`] (the weights stream once per 4 images; the portable loop, which kept its
/// outputs in L1 rather than registers, took 0.25 ms per MobileNetV2 image), the last `n mod 16`
/// columns summed one by one. Both add the terms `k` ascending from zero with fused
/// multiply-adds, as [`dense_rows_with`] does.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn dense_rows_avx512(rows: &mut [(&[f32], &mut [f32])], weights: &[f32]) {
    let Some((k, n)) = rows.first().map(|(x, out)| (x.len(), out.len())) else {
        return;
    };
    let x: Vec<f32> = rows.iter().flat_map(|(x, _)| x.iter().copied()).collect();
    let mut y = vec![0f32; rows.len() * n];
    let wide = n - n % LANES;
    if k > 0 && wide > 0 {
        // SAFETY: the caller detected AVX-512F, the function's only requirement.
        unsafe { avx512::product(rows.len(), k, wide, &x, k, weights, n, &mut y, n) };
    }
    for ((x, out), y) in rows.iter_mut().zip(y.chunks_exact(n)) {
        out[..wide].copy_from_slice(&y[..wide]);
        for (j, o) in out.iter_mut().enumerate().skip(wide) {
            *o = x
                .iter()
                .zip(weights[j..].iter().step_by(n))
                .fold(0.0, |acc, (&v, &w)| v.mul_add(w, acc));
        }
    }
}

/// Images whose dense outputs [`dense_rows`] accumulates together.
const DENSE_ROWS: usize = 8;

/// Output columns of one pass of [`dense_rows`] (4 AVX-512 vectors per image).
const DENSE_COLUMNS: usize = 64;

fn pixels(dims: Dims) -> usize {
    (dims.h * dims.w).max(1)
}

/// `act(out + bias + residual)` in place, over rows of `bias.len()` channels, in one pass built
/// for the widest vectors this CPU runs (an SSE2 pass per term took 15 % of MobileNetV2's time).
fn epilogue(out: &mut [f32], bias: Option<&[f32]>, residual: Option<&[f32]>, act: Act) {
    direct(Direct::Epilogue {
        out,
        bias,
        residual,
        act,
    });
}

/// Apply `act` in place.
fn activate(out: &mut [f32], act: Act) {
    epilogue(out, None, None, act);
}

/// [`epilogue`] with each activation's own loop, so that every one vectorises.
#[inline(always)]
fn epilogue_with(out: &mut [f32], bias: Option<&[f32]>, residual: Option<&[f32]>, act: Act) {
    match act {
        Act::None => finish(out, bias, residual, |x| x),
        Act::Relu => finish(out, bias, residual, |x| x.max(0.0)),
        Act::Clip(lo, hi) => finish(out, bias, residual, |x| x.max(lo).min(hi)),
        other => finish(out, bias, residual, |x| other.apply(x)),
    }
}

/// `out = f(out + bias + residual)`, one loop per combination of terms.
#[inline(always)]
fn finish(out: &mut [f32], bias: Option<&[f32]>, residual: Option<&[f32]>, f: impl Fn(f32) -> f32) {
    match (bias.filter(|b| !b.is_empty()), residual) {
        (Some(bias), Some(residual)) => {
            let c = bias.len();
            for (row, r) in out.chunks_exact_mut(c).zip(residual.chunks_exact(c)) {
                for ((o, b), r) in row.iter_mut().zip(bias).zip(r) {
                    *o = f(*o + b + r);
                }
            }
        }
        (Some(bias), None) => {
            for row in out.chunks_exact_mut(bias.len()) {
                row.iter_mut().zip(bias).for_each(|(o, b)| *o = f(*o + b));
            }
        }
        (None, Some(residual)) => out
            .iter_mut()
            .zip(residual)
            .for_each(|(o, r)| *o = f(*o + r)),
        (None, None) => out.iter_mut().for_each(|o| *o = f(*o)),
    }
}

/// `c[i][j] = Σ_p a[i][p]·b[p][j]` for `m` rows: `a` rows `a_stride` apart, `b` is `k × n`
/// row-major, `c` rows `c_stride` apart (a column slice of a wider output when grouped).
#[allow(clippy::too_many_arguments, unsafe_code)]
fn matmul(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_stride: usize,
    b: &[f32],
    c: &mut [f32],
    c_stride: usize,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        for row in c.chunks_mut(c_stride).take(m) {
            row[..n].fill(0.0);
        }
        return Ok(());
    }
    let fits = a_stride >= k
        && c_stride >= n
        && a.len() >= (m - 1) * a_stride + k
        && b.len() >= k * n
        && c.len() >= (m - 1) * c_stride + n;
    if !fits {
        return Err(Error::Inference(format!(
            "matrix product {m}×{k}×{n} does not fit its buffers"
        )));
    }
    #[cfg(target_arch = "x86_64")]
    if k <= avx512::PRODUCT_DEPTH
        && n.is_multiple_of(LANES)
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        // SAFETY: the CPU supports AVX-512F, the function's only requirement.
        unsafe { avx512::product(m, k, n, a, a_stride, b, n, c, c_stride) };
        return Ok(());
    }
    // SAFETY: the checks above keep every element gemm reads (a: m rows of k at a_stride; b: k
    // rows of n) and writes (c: m rows of n at c_stride) inside the slices, and `c` is borrowed
    // mutably so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_stride as isize,
            false,
            a.as_ptr(),
            1,
            a_stride as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    Ok(())
}

/// 1×1 and image-to-rows convolutions: one matrix product per block of output rows and group,
/// then the block's epilogue while it is in cache.
fn convolve(
    conv: &Conv,
    input: &[f32],
    in_dims: Dims,
    out: &mut [f32],
    out_dims: Dims,
    residual: Option<&[f32]>,
    scratch: &mut [f32],
) -> Result<()> {
    let [kh, kw] = conv.kernel;
    let groups = conv.groups;
    let (cin, cout) = (in_dims.c, out_dims.c);
    let (cin_g, cout_g) = (cin / groups, cout / groups);
    let k = kh * kw * cin_g;
    let rows = out_dims.h * out_dims.w;
    let block = block_rows(cout);
    for start in (0..rows).step_by(block) {
        let m = block.min(rows - start);
        let out_block = &mut out[start * cout..(start + m) * cout];
        for group in 0..groups {
            let weights = &conv.weights[group * k * cout_g..(group + 1) * k * cout_g];
            let c = &mut out_block[group * cout_g..];
            if conv.kind == ConvKind::Pointwise {
                matmul(m, k, cout_g, &input[start * cin..], cin, weights, c, cout)?;
            } else {
                let rows_buffer = scratch
                    .get_mut(..m * k)
                    .ok_or_else(|| Error::Inference("scratch too small".into()))?;
                image_to_rows(
                    conv,
                    input,
                    in_dims,
                    out_dims,
                    start,
                    group * cin_g,
                    cin_g,
                    rows_buffer,
                );
                matmul(m, k, cout_g, rows_buffer, k, weights, c, cout)?;
            }
        }
        let residual = residual.map(|r| &r[start * cout..(start + m) * cout]);
        epilogue(out_block, Some(&conv.bias), residual, conv.act);
    }
    Ok(())
}

/// [`Op::Expanded`]: per band of output rows, the expanded rows the band's windows cover are
/// computed into `scratch` (rows the previous band already holds are moved, not recomputed),
/// then the depthwise convolution reads them there.
fn expanded(
    expand: &Conv,
    depthwise: &Conv,
    input: &[f32],
    [in_dims, mid, out_dims]: [Dims; 3],
    out: &mut [f32],
    residual: Option<&[f32]>,
    scratch: &mut [f32],
) -> Result<()> {
    let (band_rows, held) = band(depthwise, mid, out_dims.h);
    let row = mid.w * mid.c;
    let scratch = scratch
        .get_mut(..held * row)
        .ok_or_else(|| Error::Inference("scratch too small".into()))?;
    let (s, pad, span) = (depthwise.stride[0], depthwise.pads[0], depthwise.span(0));
    let mut have: std::ops::Range<usize> = 0..0;
    for first in (0..out_dims.h).step_by(band_rows) {
        let end = (first + band_rows).min(out_dims.h);
        let lo = (first * s).saturating_sub(pad).min(mid.h);
        let hi = ((end - 1) * s + span)
            .saturating_sub(pad)
            .min(mid.h)
            .max(lo);
        let kept = have.end.saturating_sub(lo.max(have.start));
        if kept > 0 {
            let from = (have.end - kept - have.start) * row;
            scratch.copy_within(from..from + kept * row, 0);
        }
        let (new_from, new_rows) = (lo + kept, hi - lo - kept);
        if new_rows > 0 {
            let m = new_rows * mid.w;
            let block = &mut scratch[kept * row..(kept + new_rows) * row];
            let a = &input[new_from * mid.w * in_dims.c..];
            matmul(
                m,
                in_dims.c,
                mid.c,
                a,
                in_dims.c,
                &expand.weights,
                block,
                mid.c,
            )?;
            epilogue(block, Some(&expand.bias), None, expand.act);
        }
        have = lo..hi;
        direct(Direct::Conv {
            conv: depthwise,
            source: Source {
                data: &scratch[..(hi - lo) * row],
                dims: mid,
                origin: lo,
            },
            out: &mut *out,
            out_dims,
            rows: first..end,
            residual,
        });
    }
    Ok(())
}

/// Rows `start..` of the image-to-rows matrix of one group: each output pixel's window,
/// `[ky][kx][channel]`, zeros where the window leaves the image.
#[allow(clippy::too_many_arguments)]
fn image_to_rows(
    conv: &Conv,
    input: &[f32],
    in_dims: Dims,
    out_dims: Dims,
    start: usize,
    first_channel: usize,
    channels: usize,
    rows: &mut [f32],
) {
    let [kh, kw] = conv.kernel;
    let k = kh * kw * channels;
    for (r, row) in rows.chunks_exact_mut(k).enumerate() {
        let pixel = start + r;
        let (oy, ox) = (pixel / out_dims.w, pixel % out_dims.w);
        for ky in 0..kh {
            let iy = (oy * conv.stride[0] + ky * conv.dilation[0]).checked_sub(conv.pads[0]);
            for kx in 0..kw {
                let ix = (ox * conv.stride[1] + kx * conv.dilation[1]).checked_sub(conv.pads[1]);
                let dst = &mut row[(ky * kw + kx) * channels..(ky * kw + kx + 1) * channels];
                match (iy, ix) {
                    (Some(iy), Some(ix)) if iy < in_dims.h && ix < in_dims.w => {
                        let at = (iy * in_dims.w + ix) * in_dims.c + first_channel;
                        dst.copy_from_slice(&input[at..at + channels]);
                    }
                    _ => dst.fill(0.0),
                }
            }
        }
    }
}

/// The taps of a window that fall inside the input: `first..end` of `0..kernel`.
#[inline(always)]
fn taps(
    out: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    kernel: usize,
    size: usize,
) -> (usize, usize) {
    let origin = (out * stride) as isize - pad as isize;
    let d = dilation as isize;
    let first = if origin >= 0 {
        0
    } else {
        ((-origin) + d - 1) / d
    };
    let end = ((size as isize - origin) + d - 1) / d;
    (
        first.max(0) as usize,
        end.clamp(0, kernel as isize) as usize,
    )
}

/// The in-bounds taps (`first..end` per axis) of output pixel `[oy, ox]`'s window.
#[inline(always)]
fn conv_taps(conv: &Conv, in_dims: Dims, [oy, ox]: [usize; 2]) -> [(usize, usize); 2] {
    [
        window_rows(conv, in_dims, oy),
        taps(
            ox,
            conv.stride[1],
            conv.dilation[1],
            conv.pads[1],
            conv.kernel[1],
            in_dims.w,
        ),
    ]
}

/// The in-bounds window rows (`first..end` of `0..kernel[0]`) of output row `oy`.
#[inline(always)]
fn window_rows(conv: &Conv, in_dims: Dims, oy: usize) -> (usize, usize) {
    taps(
        oy,
        conv.stride[0],
        conv.dilation[0],
        conv.pads[0],
        conv.kernel[0],
        in_dims.h,
    )
}

/// Multiply-add as the build allows: fused where the CPU has FMA, separate in the portable build.
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;

    /// The fast path of [`depthwise_with`] (`c` a multiple of 16 where a build has its own).
    #[inline(always)]
    fn depthwise_row<const K: usize, const S: usize>(row: &DepthwiseRow, out: &mut [f32])
    where
        Self: Sized,
    {
        depthwise_row::<Self, K, S>(row, out);
    }

    /// Output row `oy` of a small convolution.
    #[inline(always)]
    fn small_row(
        conv: &Conv,
        input: &[f32],
        in_dims: Dims,
        out: &mut [f32],
        out_dims: Dims,
        oy: usize,
    ) where
        Self: Sized,
    {
        small_with::<Self>(conv, input, in_dims, out, out_dims, oy);
    }
}

/// `a·b + c` rounded once (FMA builds).
#[cfg(target_arch = "x86_64")]
struct Fused;

#[cfg(target_arch = "x86_64")]
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// [`Fused`] with the AVX-512 depthwise and small-convolution kernels ([`avx512`]).
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl MulAdd for Avx512 {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    #[inline(always)]
    #[allow(unsafe_code)]
    fn depthwise_row<const K: usize, const S: usize>(row: &DepthwiseRow, out: &mut [f32]) {
        if row.out_dims.c.is_multiple_of(LANES) {
            // SAFETY: `Avx512` is only used inside `wide::avx512`, which `direct` calls after
            // detecting AVX-512F.
            unsafe { avx512::depthwise_row::<K, S>(row, out) };
        } else {
            depthwise_row::<Self, K, S>(row, out);
        }
    }

    #[inline(always)]
    #[allow(unsafe_code)]
    fn small_row(
        conv: &Conv,
        input: &[f32],
        in_dims: Dims,
        out: &mut [f32],
        out_dims: Dims,
        oy: usize,
    ) {
        if conv.groups == 1 && out_dims.c.is_multiple_of(LANES) {
            // SAFETY: as in `depthwise_row`.
            unsafe { avx512::small_row(conv, input, in_dims, out, out_dims, oy) };
        } else {
            small_with::<Self>(conv, input, in_dims, out, out_dims, oy);
        }
    }
}

/// `a·b + c` rounded twice (portable builds: no FMA instruction to rely on).
struct Separate;

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Lanes of the channel blocks the depthwise and direct kernels keep in registers (one AVX-512
/// vector, two AVX2 ones).
const LANES: usize = 16;

/// Output pixels the depthwise fast path computes together.
const PIXELS: usize = 8;

/// `x·w + acc` lane by lane, as a value (so the accumulators stay in registers).
#[inline(always)]
fn lanes_mul_add<F: MulAdd>(
    x: &[f32; LANES],
    w: &[f32; LANES],
    acc: &[f32; LANES],
) -> [f32; LANES] {
    std::array::from_fn(|lane| F::mul_add(x[lane], w[lane], acc[lane]))
}

/// The input of a convolution as a kernel reads it: `rows` input rows from row `origin` (the
/// whole tensor, or the band of an expanded tensor a fused op holds).
#[derive(Clone, Copy)]
struct Source<'a> {
    data: &'a [f32],
    dims: Dims,
    origin: usize,
}

impl Source<'_> {
    /// Offset of input pixel `[iy, ix]` (`iy` in the whole tensor's rows).
    #[inline(always)]
    fn at(&self, iy: usize, ix: usize) -> usize {
        ((iy - self.origin) * self.dims.w + ix) * self.dims.c
    }
}

/// What every pixel of one output row of a depthwise convolution reads.
struct DepthwiseRow<'a> {
    conv: &'a Conv,
    source: Source<'a>,
    out_dims: Dims,
    oy: usize,
}

/// Output row `oy` of a convolution with one filter per channel. Undilated square 3×3 and 5×5
/// kernels of stride 1 or 2 (MobileNet, EfficientNet) take the fast path: per block of 16
/// channels, the block's weights stay in registers while the row's interior pixels are computed
/// [`PIXELS`] at a time; window edges and channel remainders go pixel by pixel.
#[inline(always)]
fn depthwise_with<F: MulAdd>(row: &DepthwiseRow, out: &mut [f32]) {
    match (row.conv.kernel, row.conv.dilation, row.conv.stride[1]) {
        ([3, 3], [1, 1], 1) => F::depthwise_row::<3, 1>(row, out),
        ([3, 3], [1, 1], 2) => F::depthwise_row::<3, 2>(row, out),
        ([5, 5], [1, 1], 1) => F::depthwise_row::<5, 1>(row, out),
        ([5, 5], [1, 1], 2) => F::depthwise_row::<5, 2>(row, out),
        _ => {
            for ox in 0..row.out_dims.w {
                depthwise_pixel::<F>(row, ox, 0, out);
            }
        }
    }
}

/// One block of [`LANES`] channels of a `K × K` depthwise filter, held in registers.
struct DepthwiseBlock<const K: usize> {
    weights: [[[f32; LANES]; K]; K],
    bias: [f32; LANES],
    first: usize,
}

/// The fast path of [`depthwise_with`]: an undilated `K × K` kernel of horizontal stride `S`.
#[inline(always)]
fn depthwise_row<F: MulAdd, const K: usize, const S: usize>(row: &DepthwiseRow, out: &mut [f32]) {
    let (conv, out_dims) = (row.conv, row.out_dims);
    let c = out_dims.c;
    let (x_first, x_end) = interior(conv, row.source.dims, out_dims);
    let blocks = c / LANES;
    for block in 0..blocks {
        let first = block * LANES;
        let mut filter = DepthwiseBlock {
            weights: [[[0f32; LANES]; K]; K],
            bias: [0f32; LANES],
            first,
        };
        for (ky, taps) in filter.weights.iter_mut().enumerate() {
            for (kx, lanes) in taps.iter_mut().enumerate() {
                lanes.copy_from_slice(&conv.weights[(ky * K + kx) * c + first..][..LANES]);
            }
        }
        filter
            .bias
            .copy_from_slice(&conv.bias[first..first + LANES]);
        let mut ox = x_first;
        while ox + PIXELS <= x_end {
            depthwise_pixels::<F, K, S, PIXELS>(row, &filter, ox, out);
            ox += PIXELS;
        }
        while ox < x_end {
            depthwise_pixels::<F, K, S, 1>(row, &filter, ox, out);
            ox += 1;
        }
    }
    for ox in (0..x_first).chain(x_end..out_dims.w) {
        depthwise_pixel::<F>(row, ox, 0, out);
    }
    if blocks * LANES < c {
        for ox in x_first..x_end {
            depthwise_pixel::<F>(row, ox, blocks * LANES, out);
        }
    }
}

/// `P` adjacent interior output pixels `ox..` of one channel block. `P`, `K` and `S` are
/// constants so the accumulators stay in registers (as values: LLVM kept arrays updated in place
/// on the stack, 5× slower) and the overlapping windows' loads are shared; independent
/// accumulator chains hide the FMA latency of one pixel's `K·K` chain.
#[inline(always)]
fn depthwise_pixels<F: MulAdd, const K: usize, const S: usize, const P: usize>(
    row: &DepthwiseRow,
    filter: &DepthwiseBlock<K>,
    ox: usize,
    out: &mut [f32],
) {
    let DepthwiseRow {
        conv,
        source,
        out_dims,
        oy,
    } = *row;
    let c = source.dims.c;
    let (y0, y1) = window_rows(conv, source.dims, oy);
    let iy0 = oy * conv.stride[0] + y0 - conv.pads[0];
    let mut acc = [filter.bias; P];
    for (ky, taps) in filter.weights.iter().enumerate().take(y1).skip(y0) {
        let line = source.at(iy0 + ky - y0, ox * S - conv.pads[1]) + filter.first;
        let window = &source.data[line..][..((P - 1) * S + K - 1) * c + LANES];
        for (kx, w) in taps.iter().enumerate() {
            for (p, acc) in acc.iter_mut().enumerate() {
                let x: &[f32; LANES] = window[(p * S + kx) * c..][..LANES]
                    .try_into()
                    .unwrap_or(&[0f32; LANES]);
                *acc = lanes_mul_add::<F>(x, w, acc);
            }
        }
    }
    for (p, acc) in acc.iter().enumerate() {
        out[(oy * out_dims.w + ox + p) * c + filter.first..][..LANES].copy_from_slice(acc);
    }
}

/// One output pixel `[row.oy, ox]` of a depthwise convolution, channels `first..`, in blocks of
/// 64, 16 and 1.
#[inline(always)]
fn depthwise_pixel<F: MulAdd>(row: &DepthwiseRow, ox: usize, first: usize, out: &mut [f32]) {
    let (conv, oy) = (row.conv, row.oy);
    let c = row.out_dims.c;
    let [(y0, y1), (x0, x1)] = conv_taps(conv, row.source.dims, [oy, ox]);
    let window = Window {
        rows: y0..y1,
        cols: x0..x1,
        iy0: (oy * conv.stride[0]) as isize - conv.pads[0] as isize,
        ix0: (ox * conv.stride[1]) as isize - conv.pads[1] as isize,
    };
    let pixel = &mut out[(oy * row.out_dims.w + ox) * c..][..c];
    let mut first = first;
    while first + 64 <= c {
        depthwise_block::<F, 64>(row, &window, first, pixel);
        first += 64;
    }
    while first + LANES <= c {
        depthwise_block::<F, LANES>(row, &window, first, pixel);
        first += LANES;
    }
    while first < c {
        depthwise_block::<F, 1>(row, &window, first, pixel);
        first += 1;
    }
}

/// The in-bounds taps of one output pixel's window and where the window starts in the input.
struct Window {
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    iy0: isize,
    ix0: isize,
}

/// `L` channels from `first` of one output pixel: bias + Σ in-bounds taps input·weight.
#[inline(always)]
fn depthwise_block<F: MulAdd, const L: usize>(
    row: &DepthwiseRow,
    window: &Window,
    first: usize,
    pixel: &mut [f32],
) {
    let (conv, source) = (row.conv, row.source);
    let kw = conv.kernel[1];
    let mut acc = [0f32; L];
    acc.copy_from_slice(&conv.bias[first..first + L]);
    for ky in window.rows.clone() {
        let iy = (window.iy0 + (ky * conv.dilation[0]) as isize) as usize;
        for kx in window.cols.clone() {
            let ix = (window.ix0 + (kx * conv.dilation[1]) as isize) as usize;
            let at = source.at(iy, ix) + first;
            let x = &source.data[at..at + L];
            let w = &conv.weights[(ky * kw + kx) * source.dims.c + first..][..L];
            for lane in 0..L {
                acc[lane] = F::mul_add(x[lane], w[lane], acc[lane]);
            }
        }
    }
    pixel[first..first + L].copy_from_slice(&acc);
}

/// Work the hand-written kernels do (everything but `gemm`'s matrix products).
enum Direct<'a> {
    /// Output rows `rows` of a depthwise or small convolution (by its kind) of one image, each
    /// row finished (residual, activation) while it is in cache.
    Conv {
        conv: &'a Conv,
        source: Source<'a>,
        out: &'a mut [f32],
        out_dims: Dims,
        rows: std::ops::Range<usize>,
        residual: Option<&'a [f32]>,
    },
    /// `out = act(out + bias + residual)`: see [`epilogue`].
    Epilogue {
        out: &'a mut [f32],
        bias: Option<&'a [f32]>,
        residual: Option<&'a [f32]>,
        act: Act,
    },
    /// `out = act(x · weights + bias)` for each row (`weights` is `x.len() × out.len()`,
    /// row-major): see [`dense_rows`]. `gemm` took 0.43 ms for MobileNetV2's 1280 × 1000
    /// classifier on one vector here; its reads alone are 5 MB.
    DenseRows {
        rows: &'a mut [(&'a [f32], &'a mut [f32])],
        weights: &'a [f32],
        bias: &'a [f32],
        act: Act,
    },
}

#[inline(always)]
fn direct_with<F: MulAdd>(job: Direct) {
    match job {
        Direct::Conv {
            conv,
            source,
            out,
            out_dims,
            rows,
            residual,
        } => {
            let row = out_dims.w * out_dims.c;
            for oy in rows {
                match conv.kind {
                    ConvKind::Depthwise => depthwise_with::<F>(
                        &DepthwiseRow {
                            conv,
                            source,
                            out_dims,
                            oy,
                        },
                        out,
                    ),
                    _ => F::small_row(conv, source.data, source.dims, out, out_dims, oy),
                }
                let residual = residual.map(|r| &r[oy * row..(oy + 1) * row]);
                epilogue_with(&mut out[oy * row..(oy + 1) * row], None, residual, conv.act);
            }
        }
        Direct::Epilogue {
            out,
            bias,
            residual,
            act,
        } => epilogue_with(out, bias, residual, act),
        Direct::DenseRows {
            rows,
            weights,
            bias,
            act,
        } => {
            dense_rows_with::<F>(rows, weights);
            for (_, out) in rows.iter_mut() {
                epilogue_with(out, Some(bias), None, act);
            }
        }
    }
}

/// A hand-written kernel in the widest build this CPU runs.
#[allow(unsafe_code)]
fn direct(job: Direct) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX-512F and FMA, this function's only requirements.
            return unsafe { wide::avx512(job) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA, this function's only requirements.
            return unsafe { wide::avx2(job) };
        }
    }
    direct_with::<Separate>(job);
}

/// [`direct_with`] compiled for wider vectors with fused multiply-add.
#[cfg(target_arch = "x86_64")]
mod wide {
    use super::{Avx512, Direct, Fused, direct_with};

    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn avx512(job: Direct) {
        direct_with::<Avx512>(job);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn avx2(job: Direct) {
        direct_with::<Fused>(job);
    }
}

/// `out[j] = Σ_k x[k]·weights[k][j]` for up to [`DENSE_ROWS`] images at a time,
/// [`DENSE_COLUMNS`] outputs per pass (held in L1 for every image while the weights' column
/// strip streams past once): each output starts at zero and adds its terms `k` ascending.
#[inline(always)]
fn dense_rows_with<F: MulAdd>(rows: &mut [(&[f32], &mut [f32])], weights: &[f32]) {
    for group in rows.chunks_mut(DENSE_ROWS) {
        let n = group.first().map_or(0, |(_, out)| out.len());
        if n == 0 {
            continue;
        }
        for (_, out) in group.iter_mut() {
            out.fill(0.0);
        }
        for first in (0..n).step_by(DENSE_COLUMNS) {
            let end = (first + DENSE_COLUMNS).min(n);
            for (k, strip) in weights.chunks_exact(n).enumerate() {
                let strip = &strip[first..end];
                for (x, out) in group.iter_mut() {
                    let value = x[k];
                    for (o, &w) in out[first..end].iter_mut().zip(strip) {
                        *o = F::mul_add(value, w, *o);
                    }
                }
            }
        }
    }
}

/// Output row `oy` of a convolution with few inputs per output: per output pixel and group,
/// blocks of 32, 16 and 1 output channels accumulate every in-bounds input value times its
/// weight row.
#[inline(always)]
fn small_with<F: MulAdd>(
    conv: &Conv,
    input: &[f32],
    in_dims: Dims,
    out: &mut [f32],
    out_dims: Dims,
    oy: usize,
) {
    let cout = out_dims.c;
    let cout_g = cout / conv.groups;
    // Ungrouped: the row's interior pixels PIXELS at a time, each weight row loaded once for all.
    let (x_first, x_end) = if conv.groups == 1 && cout.is_multiple_of(LANES) {
        interior(conv, in_dims, out_dims)
    } else {
        (0, 0)
    };
    let mut ox = x_first;
    while ox + PIXELS <= x_end {
        let mut first = 0;
        while first + 32 <= cout {
            small_pixels::<F, 32, PIXELS>(conv, input, in_dims, out_dims, [oy, ox], first, out);
            first += 32;
        }
        if first < cout {
            small_pixels::<F, LANES, PIXELS>(conv, input, in_dims, out_dims, [oy, ox], first, out);
        }
        ox += PIXELS;
    }
    for ox in (0..x_first).chain(ox..out_dims.w) {
        let pixel = &mut out[(oy * out_dims.w + ox) * cout..][..cout];
        for group in 0..conv.groups {
            let at = SmallPixel {
                conv,
                input,
                in_dims,
                out_dims,
                pixel: [oy, ox],
                group,
            };
            let mut first = 0;
            while first + 32 <= cout_g {
                small_block::<F, 32>(&at, first, pixel);
                first += 32;
            }
            while first + LANES <= cout_g {
                small_block::<F, LANES>(&at, first, pixel);
                first += LANES;
            }
            while first < cout_g {
                small_block::<F, 1>(&at, first, pixel);
                first += 1;
            }
        }
    }
}

/// Output columns `first..end` whose whole window lies inside the input's columns.
fn interior(conv: &Conv, in_dims: Dims, out_dims: Dims) -> (usize, usize) {
    let (left, sx, span) = (conv.pads[1], conv.stride[1], conv.span(1));
    let first = left.div_ceil(sx).min(out_dims.w);
    let end = if in_dims.w + left >= span {
        ((in_dims.w + left - span) / sx + 1).min(out_dims.w)
    } else {
        0
    };
    (first, end.max(first))
}

/// `P` adjacent interior output pixels `[oy, ox..]` of an ungrouped small convolution, output
/// channels `first..first + L`: each input value is broadcast against one weight row shared by
/// the `P` pixels' accumulators, which stay in registers.
#[inline(always)]
fn small_pixels<F: MulAdd, const L: usize, const P: usize>(
    conv: &Conv,
    input: &[f32],
    in_dims: Dims,
    out_dims: Dims,
    [oy, ox]: [usize; 2],
    first: usize,
    out: &mut [f32],
) {
    let kw = conv.kernel[1];
    let (cin, cout) = (in_dims.c, out_dims.c);
    let (y0, y1) = window_rows(conv, in_dims, oy);
    let mut acc = [[0f32; L]; P];
    let bias: &[f32; L] = conv.bias[first..first + L].try_into().unwrap_or(&[0f32; L]);
    acc.iter_mut().for_each(|a| *a = *bias);
    for ky in y0..y1 {
        let iy = oy * conv.stride[0] + ky * conv.dilation[0] - conv.pads[0];
        for kx in 0..kw {
            let ix = ox * conv.stride[1] + kx * conv.dilation[1] - conv.pads[1];
            let at = (iy * in_dims.w + ix) * cin;
            for ci in 0..cin {
                let w: &[f32; L] = conv.weights[((ky * kw + kx) * cin + ci) * cout + first..][..L]
                    .try_into()
                    .unwrap_or(&[0f32; L]);
                for (p, acc) in acc.iter_mut().enumerate() {
                    let x = input[at + p * conv.stride[1] * cin + ci];
                    *acc = std::array::from_fn(|lane| F::mul_add(x, w[lane], acc[lane]));
                }
            }
        }
    }
    for (p, acc) in acc.iter().enumerate() {
        out[(oy * out_dims.w + ox + p) * cout + first..][..L].copy_from_slice(acc);
    }
}

/// One output pixel and group of a small convolution.
struct SmallPixel<'a> {
    conv: &'a Conv,
    input: &'a [f32],
    in_dims: Dims,
    out_dims: Dims,
    pixel: [usize; 2],
    group: usize,
}

/// `L` output channels from `first` of one pixel and group.
#[inline(always)]
fn small_block<F: MulAdd, const L: usize>(at: &SmallPixel, first: usize, pixel: &mut [f32]) {
    let SmallPixel {
        conv,
        input,
        in_dims,
        out_dims,
        pixel: [oy, ox],
        group,
    } = *at;
    let [kh, kw] = conv.kernel;
    let cin_g = in_dims.c / conv.groups;
    let cout_g = out_dims.c / conv.groups;
    let rows = kh * kw * cin_g;
    let [(y0, y1), (x0, x1)] = conv_taps(conv, in_dims, [oy, ox]);
    let column = group * cout_g + first;
    let mut acc = [0f32; L];
    acc.copy_from_slice(&conv.bias[column..column + L]);
    for ky in y0..y1 {
        let iy = oy * conv.stride[0] + ky * conv.dilation[0] - conv.pads[0];
        for kx in x0..x1 {
            let ix = ox * conv.stride[1] + kx * conv.dilation[1] - conv.pads[1];
            let xs = &input[(iy * in_dims.w + ix) * in_dims.c + group * cin_g..][..cin_g];
            let row0 = group * rows + (ky * kw + kx) * cin_g;
            for (i, &x) in xs.iter().enumerate() {
                let w = &conv.weights[(row0 + i) * cout_g + first..][..L];
                for lane in 0..L {
                    acc[lane] = F::mul_add(x, w[lane], acc[lane]);
                }
            }
        }
    }
    pixel[group * cout_g + first..][..L].copy_from_slice(&acc);
}

/// Every output pixel of a pooling: `start` fills it, `add` takes in each in-bounds input pixel
/// of its window, `finish` gets the pixel with its output position and its in-bounds tap count.
#[allow(clippy::too_many_arguments)]
fn pool_windows(
    pool: &Pool,
    input: &[f32],
    in_dims: Dims,
    out: &mut [f32],
    out_dims: Dims,
    start: f32,
    add: impl Fn(&mut [f32], &[f32]),
    finish: impl Fn(&mut [f32], [usize; 2], usize),
) {
    let c = in_dims.c;
    let [sy, sx] = pool.stride;
    for oy in 0..out_dims.h {
        let (y0, y1) = taps(oy, sy, 1, pool.pads[0], pool.kernel[0], in_dims.h);
        for ox in 0..out_dims.w {
            let (x0, x1) = taps(ox, sx, 1, pool.pads[1], pool.kernel[1], in_dims.w);
            let pixel = &mut out[(oy * out_dims.w + ox) * c..][..c];
            pixel.fill(start);
            for ky in y0..y1 {
                let iy = oy * sy + ky - pool.pads[0];
                for kx in x0..x1 {
                    let ix = ox * sx + kx - pool.pads[1];
                    add(pixel, &input[(iy * in_dims.w + ix) * c..][..c]);
                }
            }
            finish(pixel, [oy, ox], (y1 - y0) * (x1 - x0));
        }
    }
}

/// Max over each window's in-bounds pixels (padding never wins).
fn max_pool(pool: &Pool, input: &[f32], in_dims: Dims, out: &mut [f32], out_dims: Dims) {
    let add = |pixel: &mut [f32], x: &[f32]| {
        pixel.iter_mut().zip(x).for_each(|(o, v)| *o = o.max(*v));
    };
    pool_windows(
        pool,
        input,
        in_dims,
        out,
        out_dims,
        f32::NEG_INFINITY,
        add,
        |_, _, _| {},
    );
}

/// Mean over each window: divided by the window's size inside the padded input (PyTorch's
/// `count_include_pad`) or by its in-bounds pixels.
fn average_pool(pool: &Pool, input: &[f32], in_dims: Dims, out: &mut [f32], out_dims: Dims) {
    let padded = |o: usize, axis: usize, size: usize| {
        let start = (o * pool.stride[axis]) as isize - pool.pads[axis] as isize;
        let end = (start + pool.kernel[axis] as isize).min((size + pool.pads[axis + 2]) as isize);
        (end - start).max(0) as usize
    };
    let add = |pixel: &mut [f32], x: &[f32]| {
        pixel.iter_mut().zip(x).for_each(|(o, v)| *o += v);
    };
    let finish = |pixel: &mut [f32], [oy, ox]: [usize; 2], inside: usize| {
        let count = if pool.count_include_pad {
            padded(oy, 0, in_dims.h) * padded(ox, 1, in_dims.w)
        } else {
            inside
        };
        let count = count.max(1) as f32;
        pixel.iter_mut().for_each(|o| *o /= count);
    };
    pool_windows(pool, input, in_dims, out, out_dims, 0.0, add, finish);
}

/// `dst[j][i] = src[i][j]` for a `rows × cols` row-major `src` (NHWC ↔ C·H·W of one image).
pub(super) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    for (i, row) in src.chunks_exact(cols).take(rows).enumerate() {
        for (j, value) in row.iter().enumerate() {
            dst[j * rows + i] = *value;
        }
    }
}
