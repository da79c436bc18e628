//! The CPU kernels of the lowered plan, on NHWC tensors of one image.
//!
//! Matrix products (1×1 and image-to-rows convolutions) go through the `gemm` crate: on this
//! project's 2-core AVX-512 machine it ran MobileNetV2's 1×1 shapes 1.6× faster than
//! `matrixmultiply` in total (5.3 vs 8.5 ms per image, `m × k × n` from 12544×32×16 to
//! 49×320×1280, one thread). tract's depthwise convolution is scalar code, so depthwise
//! convolutions, convolutions with few inputs per output (an RGB stem: image-to-rows of 3
//! channels cost more than the product), dense layers on one vector and pooling are written
//! here: loops over contiguous channels that the compiler vectorises, built for AVX-512 and AVX2
//! with FMA and chosen at run time (as `segment::quickshift` does), with a portable build
//! (wasm32's simd128 included) that multiplies and adds separately.
//!
//! **Invariant:** a result depends only on the image and the layer's shapes: products run one
//! image at a time in row blocks fixed by the layer, never by the batch or the thread count.

use super::lower::{Act, Conv, ConvKind, Dims, Op, Pool, TensorId, TensorInfo};
use crate::{Error, Result};

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
                        input,
                        in_dims,
                        out: &mut *out,
                        out_dims,
                    });
                    let c = out_dims.c;
                    for (p, row) in out.chunks_exact_mut(c).enumerate() {
                        epilogue(
                            row,
                            None,
                            residual.map(|r| &r[p * c..(p + 1) * c]),
                            conv.act,
                        );
                    }
                    Ok(())
                }
                ConvKind::Pointwise | ConvKind::General => {
                    convolve(conv, input, in_dims, out, out_dims, residual, scratch)
                }
            }
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
                activate(o, *act);
            }
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
        Op::Dense {
            input,
            weights,
            bias,
            act,
            ..
        } => {
            let x = frame.get(*input)?;
            if weights.len() != x.len() * out.len() {
                return Err(Error::Inference("dense weights do not fit".into()));
            }
            direct(Direct::Dense {
                x,
                weights,
                out: &mut *out,
            });
            epilogue(out, Some(bias), None, *act);
            Ok(())
        }
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

fn pixels(dims: Dims) -> usize {
    (dims.h * dims.w).max(1)
}

/// `act(row + bias + residual)` in place, over rows of `bias.len()` channels.
fn epilogue(out: &mut [f32], bias: Option<&[f32]>, residual: Option<&[f32]>, act: Act) {
    if let Some(bias) = bias {
        for row in out.chunks_exact_mut(bias.len()) {
            row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
        }
    }
    if let Some(residual) = residual {
        out.iter_mut().zip(residual).for_each(|(o, r)| *o += r);
    }
    activate(out, act);
}

/// Apply `act` in place (one loop per function, so each vectorises).
fn activate(out: &mut [f32], act: Act) {
    match act {
        Act::None => {}
        Act::Relu => out.iter_mut().for_each(|x| *x = x.max(0.0)),
        Act::Clip(lo, hi) => out.iter_mut().for_each(|x| *x = x.max(lo).min(hi)),
        other => out.iter_mut().for_each(|x| *x = other.apply(*x)),
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
    let [kh, kw] = conv.kernel;
    [
        taps(
            oy,
            conv.stride[0],
            conv.dilation[0],
            conv.pads[0],
            kh,
            in_dims.h,
        ),
        taps(
            ox,
            conv.stride[1],
            conv.dilation[1],
            conv.pads[1],
            kw,
            in_dims.w,
        ),
    ]
}

/// Multiply-add as the build allows: fused where the CPU has FMA, separate in the portable build.
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
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
const PIXELS: usize = 4;

/// One filter per channel. Undilated square 3×3 and 5×5 kernels (MobileNet, EfficientNet) take
/// the fast path: per output row and block of 16 channels, the block's weights stay in registers
/// while the row's interior pixels are computed; window edges and channel remainders go pixel by
/// pixel.
#[inline(always)]
fn depthwise_with<F: MulAdd>(
    conv: &Conv,
    input: &[f32],
    in_dims: Dims,
    out: &mut [f32],
    out_dims: Dims,
) {
    match (conv.kernel, conv.dilation) {
        ([3, 3], [1, 1]) => depthwise_rows::<F, 3>(conv, input, in_dims, out, out_dims),
        ([5, 5], [1, 1]) => depthwise_rows::<F, 5>(conv, input, in_dims, out, out_dims),
        _ => {
            for oy in 0..out_dims.h {
                for ox in 0..out_dims.w {
                    depthwise_pixel::<F>(conv, input, in_dims, out, out_dims, [oy, ox], 0);
                }
            }
        }
    }
}

/// The fast path of [`depthwise_with`] for a `K × K` undilated kernel.
#[inline(always)]
fn depthwise_rows<F: MulAdd, const K: usize>(
    conv: &Conv,
    input: &[f32],
    in_dims: Dims,
    out: &mut [f32],
    out_dims: Dims,
) {
    let c = out_dims.c;
    let [sy, sx] = conv.stride;
    let left = conv.pads[1];
    // Output columns whose whole window lies inside the input's columns.
    let x_first = left.div_ceil(sx).min(out_dims.w);
    let x_end = if in_dims.w + left >= K {
        ((in_dims.w + left - K) / sx + 1).min(out_dims.w)
    } else {
        0
    }
    .max(x_first);
    let blocks = c / LANES;
    for oy in 0..out_dims.h {
        let (y0, y1) = taps(oy, sy, 1, conv.pads[0], K, in_dims.h);
        let iy0 = oy * sy + y0 - conv.pads[0];
        for block in 0..blocks {
            let first = block * LANES;
            let mut weights = [[[0f32; LANES]; K]; K];
            for (ky, row) in weights.iter_mut().enumerate() {
                for (kx, lanes) in row.iter_mut().enumerate() {
                    lanes.copy_from_slice(&conv.weights[(ky * K + kx) * c + first..][..LANES]);
                }
            }
            let mut bias = [0f32; LANES];
            bias.copy_from_slice(&conv.bias[first..first + LANES]);
            // PIXELS adjacent outputs at once: independent accumulator chains hide the FMA
            // latency that one pixel's chain of K·K dependent FMAs would wait on.
            let mut ox = x_first;
            while ox < x_end {
                let count = PIXELS.min(x_end - ox);
                let mut acc = [bias; PIXELS];
                for (ky, row) in weights.iter().enumerate().take(y1).skip(y0) {
                    let line = (iy0 + ky - y0) * in_dims.w + ox * sx - left;
                    for (kx, w) in row.iter().enumerate() {
                        for (p, acc) in acc.iter_mut().enumerate().take(count) {
                            let x = &input[(line + p * sx + kx) * c + first..][..LANES];
                            for lane in 0..LANES {
                                acc[lane] = F::mul_add(x[lane], w[lane], acc[lane]);
                            }
                        }
                    }
                }
                for (p, acc) in acc.iter().enumerate().take(count) {
                    out[(oy * out_dims.w + ox + p) * c + first..][..LANES].copy_from_slice(acc);
                }
                ox += count;
            }
        }
        for ox in (0..x_first).chain(x_end..out_dims.w) {
            depthwise_pixel::<F>(conv, input, in_dims, out, out_dims, [oy, ox], 0);
        }
        if blocks * LANES < c {
            for ox in x_first..x_end {
                depthwise_pixel::<F>(
                    conv,
                    input,
                    in_dims,
                    out,
                    out_dims,
                    [oy, ox],
                    blocks * LANES,
                );
            }
        }
    }
}

/// One output pixel of a depthwise convolution, channels `first..`, in blocks of 64, 16 and 1.
#[inline(always)]
fn depthwise_pixel<F: MulAdd>(
    conv: &Conv,
    input: &[f32],
    in_dims: Dims,
    out: &mut [f32],
    out_dims: Dims,
    [oy, ox]: [usize; 2],
    first: usize,
) {
    let c = out_dims.c;
    let [(y0, y1), (x0, x1)] = conv_taps(conv, in_dims, [oy, ox]);
    let window = Window {
        rows: y0..y1,
        cols: x0..x1,
        iy0: (oy * conv.stride[0]) as isize - conv.pads[0] as isize,
        ix0: (ox * conv.stride[1]) as isize - conv.pads[1] as isize,
    };
    let pixel = &mut out[(oy * out_dims.w + ox) * c..][..c];
    let mut first = first;
    while first + 64 <= c {
        depthwise_block::<F, 64>(conv, input, in_dims, &window, first, pixel);
        first += 64;
    }
    while first + LANES <= c {
        depthwise_block::<F, LANES>(conv, input, in_dims, &window, first, pixel);
        first += LANES;
    }
    while first < c {
        depthwise_block::<F, 1>(conv, input, in_dims, &window, first, pixel);
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
    conv: &Conv,
    input: &[f32],
    in_dims: Dims,
    window: &Window,
    first: usize,
    pixel: &mut [f32],
) {
    let c = in_dims.c;
    let kw = conv.kernel[1];
    let mut acc = [0f32; L];
    acc.copy_from_slice(&conv.bias[first..first + L]);
    for ky in window.rows.clone() {
        let iy = (window.iy0 + (ky * conv.dilation[0]) as isize) as usize;
        for kx in window.cols.clone() {
            let ix = (window.ix0 + (kx * conv.dilation[1]) as isize) as usize;
            let at = (iy * in_dims.w + ix) * c + first;
            let x = &input[at..at + L];
            let w = &conv.weights[(ky * kw + kx) * c + first..][..L];
            for lane in 0..L {
                acc[lane] = F::mul_add(x[lane], w[lane], acc[lane]);
            }
        }
    }
    pixel[first..first + L].copy_from_slice(&acc);
}

/// Work the hand-written kernels do (everything but `gemm`'s matrix products).
enum Direct<'a> {
    /// A depthwise or small convolution (by its kind) of one image.
    Conv {
        conv: &'a Conv,
        input: &'a [f32],
        in_dims: Dims,
        out: &'a mut [f32],
        out_dims: Dims,
    },
    /// `out = x · weights` (`weights` is `x.len() × out.len()`, row-major): a dense layer on one
    /// vector, streaming the weights once. `gemm` took 0.43 ms for MobileNetV2's 1280 × 1000
    /// classifier here; its reads alone are 5 MB.
    Dense {
        x: &'a [f32],
        weights: &'a [f32],
        out: &'a mut [f32],
    },
}

#[inline(always)]
fn direct_with<F: MulAdd>(job: Direct) {
    match job {
        Direct::Conv {
            conv,
            input,
            in_dims,
            out,
            out_dims,
        } => match conv.kind {
            ConvKind::Depthwise => depthwise_with::<F>(conv, input, in_dims, out, out_dims),
            _ => small_with::<F>(conv, input, in_dims, out, out_dims),
        },
        Direct::Dense { x, weights, out } => dense_with::<F>(x, weights, out),
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
    use super::{Direct, Fused, direct_with};

    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn avx512(job: Direct) {
        direct_with::<Fused>(job);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn avx2(job: Direct) {
        direct_with::<Fused>(job);
    }
}

/// `out[j] = Σ_k x[k]·weights[k][j]`, `k` ascending (the same order for every vector).
#[inline(always)]
fn dense_with<F: MulAdd>(x: &[f32], weights: &[f32], out: &mut [f32]) {
    let n = out.len();
    out.fill(0.0);
    for (&value, row) in x.iter().zip(weights.chunks_exact(n)) {
        for (o, &w) in out.iter_mut().zip(row) {
            *o = F::mul_add(value, w, *o);
        }
    }
}

/// A convolution with few inputs per output: per output pixel and group, blocks of 32, 16 and 1
/// output channels accumulate every in-bounds input value times its weight row.
#[inline(always)]
fn small_with<F: MulAdd>(
    conv: &Conv,
    input: &[f32],
    in_dims: Dims,
    out: &mut [f32],
    out_dims: Dims,
) {
    let cout = out_dims.c;
    let cout_g = cout / conv.groups;
    for oy in 0..out_dims.h {
        for ox in 0..out_dims.w {
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
