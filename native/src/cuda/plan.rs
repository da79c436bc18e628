//! The CUDA device of the lowered CNN plan: the same [`Program`] the CPU executor runs (the core's
//! `lower`: BatchNormalization folded, activations and residual Adds fused), its weights uploaded
//! once, its per-image arena scaled to the batch as one device allocation, each op a cuDNN
//! convolution, a cuBLAS product or one of our NVRTC kernels.
//!
//! Layout: a tensor of `n` images occupies `n ×` its per-image size at `n ×` its per-image arena
//! offset, NHWC. The arena planner never lets live per-image ranges overlap, and scaling every
//! range by `n` keeps them apart.

// Device memory is raw addresses (one arena, offsets into it), copied and launched through
// cudarc's unsafe calls, each with its SAFETY note.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, PoisonError};

use camlime_core::engine::cnn::lower::{self, Act, Conv, ConvKind, Op, Program, TensorId};
use camlime_core::engine::{Composed, Engine, Graph, Masked, Plan, PlanRequest};
use camlime_core::ndarray::{ArrayD, ArrayViewD, IxDyn};
use camlime_core::{Error, Result};
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};

use super::GpuError;
use super::dnn::{Blas, ConvShape, Convolution, Dnn, Precision};
use super::kernels::Kernels;

/// Most workspace bytes one convolution's algorithm may use.
const MAX_WORKSPACE: usize = 1 << 30;

/// Batch sizes whose instances a plan keeps at once (each holds an arena for its batch).
const KEPT_INSTANCES: usize = 4;

/// Owned device memory, freed on drop.
#[derive(Debug)]
struct Buffer {
    ptr: CUdeviceptr,
    ctx: Arc<CudaContext>,
}

impl Buffer {
    /// `floats` uninitialised floats (at least one, so the address is real).
    fn new(ctx: &Arc<CudaContext>, floats: usize) -> std::result::Result<Self, GpuError> {
        ctx.bind_to_thread().map_err(GpuError::driver("bind"))?;
        // SAFETY: a plain allocation on the bound context.
        let ptr =
            unsafe { cudarc::driver::result::malloc_sync(floats.max(1) * 4) }.map_err(|e| {
                GpuError(format!(
                    "cannot allocate {} MB on the GPU: {e}",
                    (floats * 4) >> 20
                ))
            })?;
        Ok(Self {
            ptr,
            ctx: ctx.clone(),
        })
    }

    /// A buffer holding `values` (floats, labels, flags).
    fn upload<T>(runtime: &Runtime, values: &[T]) -> std::result::Result<Self, GpuError> {
        let buffer = Self::new(&runtime.ctx, std::mem::size_of_val(values).div_ceil(4))?;
        // SAFETY: the buffer holds the values' bytes; the copy completes before return.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(
                buffer.ptr,
                values,
                runtime.stream.cu_stream(),
            )
        }
        .map_err(GpuError::driver("upload"))?;
        runtime.sync()?;
        Ok(buffer)
    }

    /// The address `floats` floats in.
    fn at(&self, floats: usize) -> CUdeviceptr {
        self.ptr + (floats * 4) as u64
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by malloc_sync on this context, freed once; the runtime
            // synchronises its stream after every run, so no kernel still uses it.
            let _ = unsafe { cudarc::driver::result::free_sync(self.ptr) };
        }
    }
}

/// One GPU with its stream, libraries and kernels; runs one plan step at a time.
#[derive(Debug)]
pub struct Runtime {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    dnn: Dnn,
    blas: Blas,
    kernels: Kernels,
    /// The GPU's name.
    pub name: String,
    /// Held while a run uses the stream and the handles.
    lock: Mutex<()>,
}

// SAFETY: the raw cuDNN and cuBLAS handles are only used while `lock` is held (one thread at a
// time), which is how both libraries allow handles to move between threads.
unsafe impl Send for Runtime {}
unsafe impl Sync for Runtime {}

impl Runtime {
    /// Open GPU `ordinal`: context, one stream, cuDNN and cuBLAS on it, the kernels.
    pub fn new(ordinal: usize) -> std::result::Result<Self, GpuError> {
        let ctx = CudaContext::new(ordinal).map_err(GpuError::driver("context"))?;
        // SAFETY: every plan orders its work on the one stream and synchronises before it hands
        // results back, so cudarc's per-buffer events are not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(GpuError::driver("stream"))?;
        let dnn = Dnn::new(stream.cu_stream())?;
        let blas = Blas::new(stream.cu_stream())?;
        let kernels = Kernels::load(&ctx)?;
        let name = ctx.name().map_err(GpuError::driver("name"))?;
        Ok(Self {
            ctx,
            stream,
            dnn,
            blas,
            kernels,
            name,
            lock: Mutex::new(()),
        })
    }

    fn sync(&self) -> std::result::Result<(), GpuError> {
        self.stream
            .synchronize()
            .map_err(GpuError::driver("synchronize"))
    }

    /// Launch kernel `name` over `total` elements, one thread each (grid-stride).
    fn launch(&self, name: &str, total: usize, args: &[Arg]) -> std::result::Result<(), GpuError> {
        let blocks = total.div_ceil(256).clamp(1, 1 << 20) as u32;
        self.launch_grid(name, [blocks, 1, 1], [256, 1, 1], args)
    }

    /// Launch kernel `name` on a per-channel grid (see `kernels.cu`): `channels` across 32-thread
    /// blocks (x), `rows` (y; `exact`: one block row per row, else grid-stride) and `images` (z).
    fn launch_channels(
        &self,
        name: &str,
        [channels, rows, images]: [usize; 3],
        exact: bool,
        args: &[Arg],
    ) -> std::result::Result<(), GpuError> {
        const LIMIT: usize = 65_535;
        let y = if exact {
            rows
        } else {
            rows.div_ceil(8).min(LIMIT)
        };
        if y > LIMIT || images > LIMIT {
            return Err(GpuError(format!(
                "kernel {name}: {rows} rows or {images} images exceed the grid's {LIMIT}"
            )));
        }
        let grid = [channels.div_ceil(32), y.max(1), images.max(1)].map(|v| v as u32);
        self.launch_grid(name, grid, [32, 8, 1], args)
    }

    /// Launch kernel `name` with one thread per pixel (256-thread blocks, x) of each image (z).
    fn launch_pixels(
        &self,
        name: &str,
        [pixels, images]: [usize; 2],
        args: &[Arg],
    ) -> std::result::Result<(), GpuError> {
        const LIMIT: usize = 65_535;
        if images > LIMIT {
            return Err(GpuError(format!(
                "kernel {name}: {images} images exceed the grid's {LIMIT}"
            )));
        }
        let grid = [pixels.div_ceil(256), 1, images].map(|v| v as u32);
        self.launch_grid(name, grid, [256, 1, 1], args)
    }

    fn launch_grid(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        args: &[Arg],
    ) -> std::result::Result<(), GpuError> {
        let function: &CudaFunction = self.kernels.get(name)?;
        let values = args.to_vec();
        let mut builder = self.stream.launch_builder(function);
        for value in &values {
            match value {
                Arg::Ptr(v) => builder.arg(v),
                Arg::I32(v) => builder.arg(v),
                Arg::I64(v) => builder.arg(v),
                Arg::F32(v) => builder.arg(v),
            };
        }
        // SAFETY: every caller passes exactly the kernel's parameters, in order and type
        // (pointers as device addresses, `int` as I32, `i64` as I64, `float` as F32).
        unsafe {
            builder.launch(LaunchConfig {
                grid_dim: grid.into(),
                block_dim: block.into(),
                shared_mem_bytes: 0,
            })
        }
        .map(|_| ())
        .map_err(|e| GpuError(format!("kernel {name}: {e}")))
    }
}

/// A convolution's input and output: device addresses and per-image shapes.
#[derive(Clone, Copy, Debug)]
struct Io {
    x: CUdeviceptr,
    y: CUdeviceptr,
    input: lower::Dims,
    output: lower::Dims,
}

/// Called with a label after each launch (profiling synchronises and times there).
type Mark<'a> = &'a mut dyn FnMut(&'static str) -> std::result::Result<(), GpuError>;

/// The values of an image or a stack of maps in row-major order.
fn contiguous(values: &camlime_core::ndarray::ArrayView3<f32>) -> Vec<f32> {
    values.iter().copied().collect()
}

/// One kernel parameter with its exact C type.
#[derive(Clone, Copy, Debug)]
enum Arg {
    /// A device address (`float*`; 0 is null).
    Ptr(CUdeviceptr),
    /// `int`.
    I32(i32),
    /// `long long`.
    I64(i64),
    /// `float`.
    F32(f32),
}

/// `int` from a size the plan checked (tensor extents fit in 32 bits; totals use `i64`).
fn int(v: usize) -> Arg {
    Arg::I32(v as i32)
}

fn long(v: usize) -> Arg {
    Arg::I64(v as i64)
}

/// The one-channel kernel and `c` lanes, or the four-channel kernel and `c / 4` lanes when `c`
/// is a multiple of 4 (every tensor offset is a multiple of 16 floats, so 16-byte aligned).
fn vector(c: usize, one: &'static str, four: &'static str) -> (&'static str, usize) {
    if c.is_multiple_of(4) {
        (four, c / 4)
    } else {
        (one, c)
    }
}

/// The activation code and parameters the kernels take.
fn act_args(act: Act) -> [Arg; 3] {
    let (code, p0, p1) = match act {
        Act::None => (0, 0.0, 0.0),
        Act::Relu => (1, 0.0, 0.0),
        Act::Clip(lo, hi) => (2, lo, hi),
        Act::Sigmoid => (3, 0.0, 0.0),
        Act::HardSigmoid(alpha, beta) => (4, alpha, beta),
        Act::HardSwish => (5, 0.0, 0.0),
        Act::LeakyRelu(alpha) => (6, alpha, 0.0),
    };
    [Arg::I32(code), Arg::F32(p0), Arg::F32(p1)]
}

/// How one convolution runs on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConvRoute {
    /// cuDNN (weights KRSC).
    Dnn,
    /// Our depthwise kernel (weights `[ky][kx][c]`).
    Depthwise,
    /// Our direct kernel (weights in the plan's layout): padding cuDNN cannot express.
    Direct,
}

/// A convolution's weights on the device and its route.
#[derive(Debug)]
struct ConvWeights {
    route: ConvRoute,
    weights: Buffer,
    bias: Buffer,
}

impl ConvWeights {
    fn upload(
        runtime: &Runtime,
        conv: &Conv,
        input: lower::Dims,
        output: lower::Dims,
    ) -> std::result::Result<Self, GpuError> {
        let cin = input.c;
        let route = if conv.kind == ConvKind::Depthwise {
            ConvRoute::Depthwise
        } else if symmetric_fits(conv, [input.h, input.w], [output.h, output.w]) {
            ConvRoute::Dnn
        } else {
            ConvRoute::Direct
        };
        let weights = if route == ConvRoute::Dnn {
            krsc(conv, cin)
        } else {
            conv.weights.clone()
        };
        Ok(Self {
            route,
            weights: Buffer::upload(runtime, &weights)?,
            bias: Buffer::upload(runtime, &conv.bias)?,
        })
    }
}

/// Whether cuDNN, padding both sides of each axis by the plan's top/left padding, gives the
/// plan's output size: its windows then start where the plan's do, and any padding they reach is
/// zeros in both.
fn symmetric_fits(conv: &Conv, input: [usize; 2], output: [usize; 2]) -> bool {
    (0..2).all(|axis| {
        let padded = input[axis] + 2 * conv.pads[axis];
        padded >= conv.span(axis)
            && (padded - conv.span(axis)) / conv.stride[axis] + 1 == output[axis]
    })
}

/// The plan's `[group][ky][kx][ci][co_g]` weights as cuDNN's NHWC filter `[co][ky][kx][ci]`.
fn krsc(conv: &Conv, cin: usize) -> Vec<f32> {
    let [kh, kw] = conv.kernel;
    let cout = conv.bias.len();
    let (cin_g, cout_g) = (cin / conv.groups, cout / conv.groups);
    let mut out = vec![0.0; conv.weights.len()];
    for g in 0..conv.groups {
        for y in 0..kh {
            for x in 0..kw {
                for i in 0..cin_g {
                    for o in 0..cout_g {
                        let from = (((g * kh + y) * kw + x) * cin_g + i) * cout_g + o;
                        let to = (((g * cout_g + o) * kh + y) * kw + x) * cin_g + i;
                        out[to] = conv.weights[from];
                    }
                }
            }
        }
    }
    out
}

/// Device data of one op.
#[derive(Debug)]
enum OpData {
    None,
    Conv(ConvWeights),
    Expanded(ConvWeights, ConvWeights),
    Affine { scale: Buffer, shift: Buffer },
    Dense { weights: Buffer, bias: Buffer },
}

/// The buffers and cuDNN algorithms of one batch size.
#[derive(Debug)]
struct Instance {
    n: usize,
    arena: Buffer,
    /// The expanded tensor of [`Op::Expanded`] (never in the arena).
    mid: Buffer,
    workspace: Buffer,
    /// Input NCHW before the transpose, outputs NCHW after it.
    staging: Buffer,
    /// Per op: the cuDNN convolution (the expansion's for [`Op::Expanded`]).
    convolutions: Vec<Option<Convolution>>,
}

/// The CUDA device's plan.
#[derive(Debug)]
pub struct CudaPlan {
    runtime: Arc<Runtime>,
    program: Program,
    data: Vec<OpData>,
    precision: Precision,
    instances: Mutex<HashMap<usize, Instance>>,
}

fn core_error(e: GpuError) -> Error {
    Error::Inference(format!("cuda: {}", e.0))
}

impl CudaPlan {
    /// Upload `program`'s weights to `runtime`'s GPU.
    pub fn new(
        runtime: Arc<Runtime>,
        program: Program,
        precision: Precision,
    ) -> std::result::Result<Self, GpuError> {
        let mut data = Vec::with_capacity(program.ops.len());
        for op in &program.ops {
            let dims = |t: TensorId| program.tensors[t].dims;
            data.push(match op {
                Op::Conv(conv) => OpData::Conv(ConvWeights::upload(
                    &runtime,
                    conv,
                    dims(conv.input),
                    dims(conv.output),
                )?),
                Op::Expanded { expand, depthwise } => OpData::Expanded(
                    ConvWeights::upload(&runtime, expand, dims(expand.input), dims(expand.output))?,
                    ConvWeights::upload(
                        &runtime,
                        depthwise,
                        dims(expand.output),
                        dims(depthwise.output),
                    )?,
                ),
                Op::Affine { scale, shift, .. } => OpData::Affine {
                    scale: Buffer::upload(&runtime, scale)?,
                    shift: Buffer::upload(&runtime, shift)?,
                },
                Op::Dense { weights, bias, .. } => OpData::Dense {
                    weights: Buffer::upload(&runtime, weights)?,
                    bias: Buffer::upload(&runtime, bias)?,
                },
                _ => OpData::None,
            });
        }
        Ok(Self {
            runtime,
            program,
            data,
            precision,
            instances: Mutex::default(),
        })
    }

    fn len(&self, tensor: TensorId) -> usize {
        self.program.tensors[tensor].dims.len()
    }

    /// Floats of the staging buffer for `n` images: the NCHW input before its transpose, or any
    /// output after its.
    fn staging_len(&self, n: usize) -> usize {
        let outputs = self.program.outputs.iter().map(|&t| self.len(t));
        outputs.fold(self.len(self.program.input), usize::max) * n
    }

    /// Buffers and algorithms for `n` images.
    fn instance(&self, n: usize) -> std::result::Result<Instance, GpuError> {
        let rt = &self.runtime;
        let tensors = &self.program.tensors;
        let mut mid_len = 0;
        let mut convolutions = Vec::with_capacity(self.program.ops.len());
        let mut workspace_bytes = 0;
        for (op, data) in self.program.ops.iter().zip(&self.data) {
            let conv = match (op, data) {
                (Op::Conv(conv), OpData::Conv(w)) => Some((conv, w)),
                (Op::Expanded { expand, .. }, OpData::Expanded(w, _)) => {
                    mid_len = mid_len.max(self.len(expand.output));
                    Some((expand, w))
                }
                _ => None,
            };
            let found = match conv {
                Some((conv, weights)) if weights.route == ConvRoute::Dnn => {
                    let (i, o) = (tensors[conv.input].dims, tensors[conv.output].dims);
                    let shape = ConvShape {
                        n,
                        input: [i.c, i.h, i.w],
                        output: [o.c, o.h, o.w],
                        kernel: conv.kernel,
                        pads: [conv.pads[0], conv.pads[1]],
                        stride: conv.stride,
                        dilation: conv.dilation,
                        groups: conv.groups,
                    };
                    let found = Convolution::new(&rt.dnn, &shape, self.precision, MAX_WORKSPACE)?
                        .ok_or_else(|| {
                        GpuError(format!("cuDNN gives another output size for {shape:?}"))
                    })?;
                    workspace_bytes = workspace_bytes.max(found.workspace);
                    Some(found)
                }
                _ => None,
            };
            convolutions.push(found);
        }
        Ok(Instance {
            n,
            arena: Buffer::new(&rt.ctx, self.program.arena_len * n)?,
            mid: Buffer::new(&rt.ctx, mid_len * n)?,
            workspace: Buffer::new(&rt.ctx, workspace_bytes.div_ceil(4))?,
            staging: Buffer::new(&rt.ctx, self.staging_len(n))?,
            convolutions,
        })
    }

    /// Run `body` with the instance for `n` images, made on first use.
    fn with_instance<T>(
        &self,
        n: usize,
        body: impl FnOnce(&Instance) -> std::result::Result<T, GpuError>,
    ) -> std::result::Result<T, GpuError> {
        let mut instances = self
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _guard = self
            .runtime
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.runtime
            .ctx
            .bind_to_thread()
            .map_err(GpuError::driver("bind"))?;
        if !instances.contains_key(&n) && instances.len() >= KEPT_INSTANCES {
            instances.clear();
        }
        let instance = match instances.entry(n) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(self.instance(n)?),
        };
        body(instance)
    }

    /// Fill the arena and staging buffer of the `n`-image instance with NaN, so that a value an
    /// op forgets to write shows.
    pub fn poison(&self, n: usize) -> std::result::Result<(), GpuError> {
        self.with_instance(n, |instance| {
            let stream = self.runtime.stream.cu_stream();
            for (buffer, floats) in [
                (&instance.arena, self.program.arena_len * n),
                (&instance.staging, self.staging_len(n)),
            ] {
                // SAFETY: the buffer holds `floats` floats; 0xFF bytes are a NaN.
                unsafe {
                    cudarc::driver::result::memset_d8_async(buffer.ptr, 0xFF, floats * 4, stream)
                }
                .map_err(GpuError::driver("memset"))?;
            }
            self.runtime.sync()
        })
    }

    /// The device address of `tensor` in `instance`'s arena.
    fn at(&self, instance: &Instance, tensor: TensorId) -> CUdeviceptr {
        instance
            .arena
            .at(self.program.tensors[tensor].offset * instance.n)
    }

    /// Run every op on the input already in the arena (no transfers, no synchronisation).
    fn execute(&self, instance: &Instance) -> std::result::Result<(), GpuError> {
        self.execute_marked(instance, &mut |_| Ok(()))
    }

    /// [`Self::execute`], calling `mark` with a label after each launch.
    fn execute_marked(&self, instance: &Instance, mark: Mark) -> std::result::Result<(), GpuError> {
        for ((op, data), convolution) in self
            .program
            .ops
            .iter()
            .zip(&self.data)
            .zip(&instance.convolutions)
        {
            self.step(instance, op, data, convolution.as_ref(), mark)?;
        }
        Ok(())
    }

    /// Where one pass over `n` images spends its time: seconds and launches per kind of launch,
    /// most first (each launch synchronised, so the sum exceeds an unsynchronised pass).
    pub fn profile(
        &self,
        n: usize,
    ) -> std::result::Result<Vec<(&'static str, f64, usize)>, GpuError> {
        self.with_instance(n, |instance| {
            let rt = &self.runtime;
            self.execute(instance)?;
            rt.sync()?;
            let mut totals: Vec<(&'static str, f64, usize)> = Vec::new();
            let mut last = std::time::Instant::now();
            self.execute_marked(instance, &mut |label| {
                rt.sync()?;
                let now = std::time::Instant::now();
                let seconds = (now - last).as_secs_f64();
                last = now;
                match totals.iter_mut().find(|(l, _, _)| *l == label) {
                    Some(entry) => {
                        entry.1 += seconds;
                        entry.2 += 1;
                    }
                    None => totals.push((label, seconds, 1)),
                }
                Ok(())
            })?;
            totals.sort_by(|a, b| b.1.total_cmp(&a.1));
            Ok(totals)
        })
    }

    /// Time `runs` passes over the arena with no transfer (the device's own throughput): the
    /// median seconds per pass.
    pub fn time_resident(&self, n: usize, runs: usize) -> std::result::Result<f64, GpuError> {
        self.with_instance(n, |instance| {
            self.execute(instance)?;
            self.runtime.sync()?;
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs.max(1) {
                let start = std::time::Instant::now();
                self.execute(instance)?;
                self.runtime.sync()?;
                times.push(start.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            Ok(times[times.len() / 2])
        })
    }

    fn conv(
        &self,
        instance: &Instance,
        conv: &Conv,
        weights: &ConvWeights,
        convolution: Option<&Convolution>,
        Io {
            x,
            y,
            input: in_dims,
            output: out_dims,
        }: Io,
        mark: Mark,
    ) -> std::result::Result<(), GpuError> {
        let rt = &self.runtime;
        let n = instance.n;
        let residual = conv.residual.map_or(0, |r| self.at(instance, r));
        let pixels = n * out_dims.h * out_dims.w;
        let [act, p0, p1] = act_args(conv.act);
        match (weights.route, convolution) {
            (ConvRoute::Dnn, Some(convolution)) => {
                // SAFETY: x, y are this instance's tensors of the described shapes; the workspace
                // holds the largest algorithm's need.
                unsafe {
                    convolution.run(&rt.dnn, x, weights.weights.ptr, y, instance.workspace.ptr)
                }?;
                mark(if conv.kernel == [1, 1] {
                    "cuDNN 1×1 conv"
                } else {
                    "cuDNN conv"
                })?;
                self.epilogue(
                    y,
                    weights.bias.ptr,
                    residual,
                    [pixels, out_dims.c],
                    conv.act,
                )?;
                mark("conv epilogue")
            }
            (ConvRoute::Depthwise | ConvRoute::Direct, _) => {
                // The depthwise kernels count channels in lanes (float4s for `depthwise4`);
                // the direct kernel takes both channel counts and the groups.
                let (name, lanes, channels) = if weights.route == ConvRoute::Depthwise {
                    let (name, lanes) = vector(in_dims.c, "depthwise", "depthwise4");
                    (name, lanes, lanes)
                } else {
                    ("direct_conv", out_dims.c, in_dims.c)
                };
                let mut args = vec![
                    Arg::Ptr(x),
                    Arg::Ptr(weights.weights.ptr),
                    Arg::Ptr(weights.bias.ptr),
                    Arg::Ptr(residual),
                    Arg::Ptr(y),
                    int(in_dims.h),
                    int(in_dims.w),
                    int(channels),
                    int(out_dims.h),
                    int(out_dims.w),
                ];
                if weights.route == ConvRoute::Direct {
                    args.extend([int(out_dims.c), int(conv.groups)]);
                }
                args.extend(
                    [
                        conv.kernel[0],
                        conv.kernel[1],
                        conv.stride[0],
                        conv.stride[1],
                        conv.dilation[0],
                        conv.dilation[1],
                        conv.pads[0],
                        conv.pads[1],
                    ]
                    .map(int),
                );
                args.extend([act, p0, p1]);
                rt.launch_channels(name, [lanes, out_dims.h, n], true, &args)?;
                mark(name)
            }
            (ConvRoute::Dnn, None) => {
                Err(GpuError("a cuDNN convolution without its algorithm".into()))
            }
        }
    }

    fn step(
        &self,
        instance: &Instance,
        op: &Op,
        data: &OpData,
        convolution: Option<&Convolution>,
        mark: Mark,
    ) -> std::result::Result<(), GpuError> {
        let label = match op {
            Op::Conv(_) | Op::Expanded { .. } => None,
            Op::MaxPool(_) | Op::AveragePool(_) => Some("pool"),
            Op::GlobalAveragePool { .. } => Some("global average"),
            Op::Affine { .. } | Op::Add { .. } | Op::Activation { .. } => Some("pointwise"),
            Op::Concat { .. } => Some("concat"),
            Op::Flatten { .. } => Some("flatten"),
            Op::Dense { .. } => Some("dense"),
            Op::Lrn { .. } => Some("lrn"),
            Op::Softmax { .. } => Some("softmax"),
        };
        self.launch_op(instance, op, data, convolution, mark)?;
        label.map_or(Ok(()), mark)
    }

    fn launch_op(
        &self,
        instance: &Instance,
        op: &Op,
        data: &OpData,
        convolution: Option<&Convolution>,
        mark: Mark,
    ) -> std::result::Result<(), GpuError> {
        let rt = &self.runtime;
        let n = instance.n;
        let dims = |t: TensorId| self.program.tensors[t].dims;
        let at = |t: TensorId| self.at(instance, t);
        let null: CUdeviceptr = 0;
        match (op, data) {
            (Op::Conv(conv), OpData::Conv(weights)) => self.conv(
                instance,
                conv,
                weights,
                convolution,
                Io {
                    x: at(conv.input),
                    y: at(conv.output),
                    input: dims(conv.input),
                    output: dims(conv.output),
                },
                mark,
            ),
            (Op::Expanded { expand, depthwise }, OpData::Expanded(ew, dw)) => {
                let mid = instance.mid.ptr;
                self.conv(
                    instance,
                    expand,
                    ew,
                    convolution,
                    Io {
                        x: at(expand.input),
                        y: mid,
                        input: dims(expand.input),
                        output: dims(expand.output),
                    },
                    mark,
                )?;
                self.conv(
                    instance,
                    depthwise,
                    dw,
                    None,
                    Io {
                        x: mid,
                        y: at(depthwise.output),
                        input: dims(expand.output),
                        output: dims(depthwise.output),
                    },
                    mark,
                )
            }
            (Op::MaxPool(pool) | Op::AveragePool(pool), _) => {
                let (i, o) = (dims(pool.input), dims(pool.output));
                let mut args = vec![Arg::Ptr(at(pool.input)), Arg::Ptr(at(pool.output))];
                args.extend(
                    [
                        n,
                        i.h,
                        i.w,
                        i.c,
                        o.h,
                        o.w,
                        pool.kernel[0],
                        pool.kernel[1],
                        pool.stride[0],
                        pool.stride[1],
                        pool.pads[0],
                        pool.pads[1],
                        pool.pads[2],
                        pool.pads[3],
                    ]
                    .map(int),
                );
                args.push(int(usize::from(matches!(op, Op::AveragePool(_)))));
                args.push(int(usize::from(pool.count_include_pad)));
                rt.launch("pool", n * o.len(), &args)
            }
            (Op::GlobalAveragePool { input, output }, _) => {
                let d = dims(*input);
                rt.launch(
                    "global_average",
                    n * d.c,
                    &[
                        Arg::Ptr(at(*input)),
                        Arg::Ptr(at(*output)),
                        int(n),
                        int(d.h * d.w),
                        int(d.c),
                    ],
                )
            }
            (
                Op::Affine {
                    input, output, act, ..
                },
                OpData::Affine { scale, shift },
            ) => self.pointwise(
                [at(*input), null, scale.ptr, shift.ptr, at(*output)],
                n,
                dims(*input),
                *act,
            ),
            (Op::Add { a, b, output, act }, _) => {
                self.pointwise([at(*a), at(*b), null, null, at(*output)], n, dims(*a), *act)
            }
            (Op::Activation { input, output, act }, _) => self.pointwise(
                [at(*input), null, null, null, at(*output)],
                n,
                dims(*input),
                *act,
            ),
            (Op::Concat { inputs, output }, _) => {
                let out = dims(*output);
                let pixels = n * out.h * out.w;
                let mut offset = 0;
                for &input in inputs {
                    let width = dims(input).c;
                    rt.launch(
                        "concat_slice",
                        pixels * width,
                        &[
                            Arg::Ptr(at(input)),
                            Arg::Ptr(at(*output)),
                            long(pixels),
                            int(width),
                            int(out.c),
                            int(offset),
                        ],
                    )?;
                    offset += width;
                }
                Ok(())
            }
            (Op::Flatten { input, output }, _) => {
                let d = dims(*input);
                self.transpose(at(*input), at(*output), n, d.h * d.w, d.c)
            }
            (
                Op::Dense {
                    input, output, act, ..
                },
                OpData::Dense { weights, bias },
            ) => {
                let (k, cols) = (self.len(*input), self.len(*output));
                let y = at(*output);
                rt.blas.product([n, k, cols], at(*input), weights.ptr, y)?;
                self.epilogue(y, bias.ptr, null, [n, cols], *act)
            }
            (
                Op::Lrn {
                    input,
                    output,
                    size,
                    alpha,
                    beta,
                    bias,
                },
                _,
            ) => {
                let d = dims(*input);
                rt.launch(
                    "lrn",
                    n * d.len(),
                    &[
                        Arg::Ptr(at(*input)),
                        Arg::Ptr(at(*output)),
                        long(n * d.h * d.w),
                        int(d.c),
                        int(*size),
                        Arg::F32(*alpha),
                        Arg::F32(*beta),
                        Arg::F32(*bias),
                    ],
                )
            }
            (Op::Softmax { input, output }, _) => {
                // One block per row: `total` counts 256 threads per row.
                rt.launch(
                    "softmax",
                    n * 256,
                    &[
                        Arg::Ptr(at(*input)),
                        Arg::Ptr(at(*output)),
                        int(n),
                        int(self.len(*input)),
                    ],
                )
            }
            (op, _) => Err(GpuError(format!("op without its device data: {op:?}"))),
        }
    }

    /// `y = act(y + bias + residual)` in place over `rows × c` values (a null residual is
    /// none), four channels per thread when `c` allows.
    fn epilogue(
        &self,
        y: CUdeviceptr,
        bias: CUdeviceptr,
        residual: CUdeviceptr,
        [rows, c]: [usize; 2],
        act: Act,
    ) -> std::result::Result<(), GpuError> {
        let [act, p0, p1] = act_args(act);
        let (name, lanes) = vector(c, "epilogue", "epilogue4");
        self.runtime.launch_channels(
            name,
            [lanes, rows, 1],
            false,
            &[
                Arg::Ptr(y),
                Arg::Ptr(bias),
                Arg::Ptr(residual),
                long(rows),
                int(lanes),
                act,
                p0,
                p1,
            ],
        )
    }

    /// `y = act(a·scale + shift + b)` over `n` tensors of `dims`; null pointers skip a term.
    fn pointwise(
        &self,
        [a, b, scale, shift, y]: [CUdeviceptr; 5],
        n: usize,
        dims: lower::Dims,
        act: Act,
    ) -> std::result::Result<(), GpuError> {
        let [act, p0, p1] = act_args(act);
        let pixels = n * dims.h * dims.w;
        self.runtime.launch_channels(
            "pointwise",
            [dims.c, pixels, 1],
            false,
            &[
                Arg::Ptr(a),
                Arg::Ptr(b),
                Arg::Ptr(scale),
                Arg::Ptr(shift),
                Arg::Ptr(y),
                long(pixels),
                int(dims.c),
                act,
                p0,
                p1,
            ],
        )
    }

    /// `n` images `rows × cols` → `cols × rows`.
    fn transpose(
        &self,
        x: CUdeviceptr,
        y: CUdeviceptr,
        n: usize,
        rows: usize,
        cols: usize,
    ) -> std::result::Result<(), GpuError> {
        self.runtime.launch_channels(
            "transpose_batch",
            [cols, rows, n],
            false,
            &[Arg::Ptr(x), Arg::Ptr(y), int(rows), int(cols)],
        )
    }

    /// Copy `input` (NCHW or `N×F`) in, run, copy the outputs out.
    fn run_batch(&self, input: &[f32], n: usize) -> std::result::Result<Vec<Vec<f32>>, GpuError> {
        let rt = &self.runtime;
        let stream = rt.stream.cu_stream();
        self.run_with(n, |instance, target| {
            let info = &self.program.tensors[self.program.input];
            let d = info.dims;
            if info.rank == 4 {
                // SAFETY: staging holds at least the input's floats.
                unsafe {
                    cudarc::driver::result::memcpy_htod_async(instance.staging.ptr, input, stream)
                }
                .map_err(GpuError::driver("input copy"))?;
                self.transpose(instance.staging.ptr, target, n, d.c, d.h * d.w)
            } else {
                // SAFETY: the input tensor's arena range holds n·len floats.
                unsafe { cudarc::driver::result::memcpy_htod_async(target, input, stream) }
                    .map_err(GpuError::driver("input copy"))
            }
        })
    }

    /// `dims` (C, H, W of one image built on the device) when they are the plan's input's.
    fn check_image(
        &self,
        dims: (usize, usize, usize),
        what: &str,
    ) -> std::result::Result<(usize, usize, usize), GpuError> {
        let info = &self.program.tensors[self.program.input];
        let d = info.dims;
        if info.rank != 4 || dims != (d.c, d.h, d.w) {
            return Err(GpuError(format!(
                "{what} {dims:?} do not fit the plan's input {}×{}×{}",
                d.c, d.h, d.w
            )));
        }
        Ok(dims)
    }

    /// Compose LIME's samples on the device from the two images, the segment map and the rows.
    fn run_composed_batch(
        &self,
        composed: &Composed,
    ) -> std::result::Result<Vec<Vec<f32>>, GpuError> {
        let rt = &self.runtime;
        let (c, h, w) = self.check_image(composed.on.dim(), "composed images")?;
        let n = composed.keep.nrows();
        let count = composed.keep.ncols();
        let on = Buffer::upload(rt, &contiguous(&composed.on))?;
        let off = Buffer::upload(rt, &contiguous(&composed.off))?;
        let segments = Buffer::upload(rt, composed.segments)?;
        let keep: Vec<u8> = composed.keep.iter().map(|&k| u8::from(k)).collect();
        let keep = Buffer::upload(rt, &keep)?;
        let pixels = h * w;
        self.run_with(n, |_, target| {
            rt.launch_pixels(
                "compose",
                [pixels, n],
                &[
                    Arg::Ptr(on.ptr),
                    Arg::Ptr(off.ptr),
                    Arg::Ptr(segments.ptr),
                    Arg::Ptr(keep.ptr),
                    Arg::Ptr(target),
                    int(c),
                    int(pixels),
                    int(count),
                ],
            )
        })
    }

    /// Build Score-CAM's masked images on the device from the image and the small maps: the
    /// host's upsampling and scaling, value for value.
    fn run_masked_batch(&self, masked: &Masked) -> std::result::Result<Vec<Vec<f32>>, GpuError> {
        let rt = &self.runtime;
        let (c, height, width) = self.check_image(masked.image.dim(), "the masked image")?;
        let (k, h, w) = masked.maps.dim();
        let taps = |n_out: usize, n_in: usize| {
            let taps = camlime_core::cam::align_corners_taps(n_out, n_in);
            let ends: Vec<i32> = taps.iter().flat_map(|t| [t.0 as i32, t.1 as i32]).collect();
            let weights: Vec<f32> = taps.iter().map(|t| t.2).collect();
            (ends, weights)
        };
        let (rows, row_weights) = taps(height, h);
        let (cols, col_weights) = taps(width, w);
        let image = Buffer::upload(rt, &contiguous(&masked.image))?;
        let maps = Buffer::upload(rt, &contiguous(&masked.maps))?;
        let [rows, row_weights, cols, col_weights] = [
            Buffer::upload(rt, &rows)?,
            Buffer::upload(rt, &row_weights)?,
            Buffer::upload(rt, &cols)?,
            Buffer::upload(rt, &col_weights)?,
        ];
        let pixels = height * width;
        let masks = Buffer::new(&rt.ctx, k * pixels)?;
        let range = Buffer::new(&rt.ctx, 2 * k)?;
        self.run_with(k, |_, target| {
            rt.launch_pixels(
                "upsample_maps",
                [pixels, k],
                &[
                    Arg::Ptr(maps.ptr),
                    Arg::Ptr(rows.ptr),
                    Arg::Ptr(row_weights.ptr),
                    Arg::Ptr(cols.ptr),
                    Arg::Ptr(col_weights.ptr),
                    Arg::Ptr(masks.ptr),
                    int(h),
                    int(w),
                    int(height),
                    int(width),
                ],
            )?;
            rt.launch_grid(
                "mask_range",
                [k as u32, 1, 1],
                [256, 1, 1],
                &[Arg::Ptr(masks.ptr), Arg::Ptr(range.ptr), int(pixels)],
            )?;
            rt.launch_pixels(
                "mask_images",
                [pixels, k],
                &[
                    Arg::Ptr(image.ptr),
                    Arg::Ptr(masks.ptr),
                    Arg::Ptr(range.ptr),
                    Arg::Ptr(target),
                    int(c),
                    int(pixels),
                ],
            )
        })
    }

    /// Write the `n`-image input with `fill` (given the instance and the input's address), run,
    /// copy the outputs out.
    fn run_with(
        &self,
        n: usize,
        fill: impl FnOnce(&Instance, CUdeviceptr) -> std::result::Result<(), GpuError>,
    ) -> std::result::Result<Vec<Vec<f32>>, GpuError> {
        self.with_instance(n, |instance| {
            let rt = &self.runtime;
            let stream = rt.stream.cu_stream();
            fill(instance, self.at(instance, self.program.input))?;
            self.execute(instance)?;
            let mut outputs = Vec::with_capacity(self.program.outputs.len());
            for &tensor in &self.program.outputs {
                let info = &self.program.tensors[tensor];
                let d = info.dims;
                let mut host = vec![0.0f32; n * d.len()];
                let source = if info.rank == 4 {
                    self.transpose(
                        self.at(instance, tensor),
                        instance.staging.ptr,
                        n,
                        d.h * d.w,
                        d.c,
                    )?;
                    instance.staging.ptr
                } else {
                    self.at(instance, tensor)
                };
                // SAFETY: source holds n·len floats; synchronised before `host` is read.
                unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut host, source, stream) }
                    .map_err(GpuError::driver("output copy"))?;
                rt.sync()?;
                outputs.push(host);
            }
            Ok(outputs)
        })
    }
}

impl Plan for CudaPlan {
    fn batch(&self) -> Option<usize> {
        None
    }

    fn run_composed(&self, composed: &Composed) -> Result<Vec<ArrayD<f32>>> {
        composed.validate()?;
        let n = composed.keep.nrows();
        if n == 0 {
            return Err(Error::Parameter("a composed batch of no images".into()));
        }
        let outputs = self.run_composed_batch(composed).map_err(core_error)?;
        self.arrays(outputs, n)
    }

    fn run_masked(&self, masked: &Masked) -> Result<Vec<ArrayD<f32>>> {
        masked.validate()?;
        let k = masked.maps.dim().0;
        let outputs = self.run_masked_batch(masked).map_err(core_error)?;
        self.arrays(outputs, k)
    }

    fn run(&self, inputs: &[ArrayViewD<f32>]) -> Result<Vec<ArrayD<f32>>> {
        let (input, n) = self.program.check_input(inputs)?;
        let contiguous = input.as_standard_layout();
        let values = contiguous
            .as_slice()
            .ok_or_else(|| Error::Inference("input not contiguous".into()))?;
        let outputs = self.run_batch(values, n).map_err(core_error)?;
        self.arrays(outputs, n)
    }
}

impl CudaPlan {
    /// The outputs as arrays of their NCHW (or `N×F`) shapes.
    fn arrays(&self, outputs: Vec<Vec<f32>>, n: usize) -> Result<Vec<ArrayD<f32>>> {
        self.program
            .outputs
            .iter()
            .zip(outputs)
            .map(|(&t, values)| {
                ArrayD::from_shape_vec(IxDyn(&self.program.shape(t, n)), values)
                    .map_err(|e| Error::Inference(format!("output shape: {e}")))
            })
            .collect()
    }
}

/// The CUDA device as an engine: GPU 0, opened on first compile.
#[derive(Debug)]
pub struct CudaEngine {
    precision: Precision,
    runtime: Mutex<Option<std::result::Result<Arc<Runtime>, String>>>,
}

impl CudaEngine {
    /// An engine computing in `precision`.
    pub fn new(precision: Precision) -> Self {
        Self {
            precision,
            runtime: Mutex::new(None),
        }
    }

    /// The process's engine for `precision` (one GPU runtime per precision, shared by every
    /// model).
    pub fn shared(precision: Precision) -> Arc<CudaEngine> {
        static ENGINES: std::sync::OnceLock<[Arc<CudaEngine>; 2]> = std::sync::OnceLock::new();
        let [tf32, strict] = ENGINES.get_or_init(|| {
            [
                Arc::new(CudaEngine::new(Precision::Tf32)),
                Arc::new(CudaEngine::new(Precision::Strict)),
            ]
        });
        match precision {
            Precision::Tf32 => tf32.clone(),
            Precision::Strict => strict.clone(),
        }
    }

    /// The GPU runtime, opened once; why not, when CUDA is absent or broken.
    pub fn runtime(&self) -> std::result::Result<Arc<Runtime>, String> {
        let mut slot = self.runtime.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert_with(|| {
            let probe = super::probe();
            if let Some(problem) = probe.problem {
                return Err(problem);
            }
            match std::panic::catch_unwind(|| Runtime::new(0)) {
                Ok(Ok(runtime)) => Ok(Arc::new(runtime)),
                Ok(Err(e)) => Err(e.0),
                Err(_) => Err("a CUDA library lacks a function cudarc needs".into()),
            }
        })
        .clone()
    }

    /// Compile to the concrete plan (the device check needs more than [`Plan`]).
    pub fn compile_plan(&self, graph: &Graph, request: &PlanRequest) -> Result<CudaPlan> {
        let runtime = self
            .runtime()
            .map_err(|why| Error::Unsupported(format!("no CUDA device: {why}")))?;
        let program = lower::lower(graph, request)?;
        CudaPlan::new(runtime, program, self.precision).map_err(core_error)
    }
}

impl Engine for CudaEngine {
    fn name(&self) -> &str {
        "cuda"
    }

    fn is_device(&self) -> bool {
        true
    }

    fn compile(&self, graph: &Graph, request: &PlanRequest) -> Result<Arc<dyn Plan>> {
        Ok(Arc::new(self.compile_plan(graph, request)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(kernel: [usize; 2], stride: [usize; 2], pads: [usize; 4], groups: usize) -> Conv {
        Conv {
            input: 0,
            output: 1,
            residual: None,
            kind: ConvKind::General,
            kernel,
            stride,
            dilation: [1, 1],
            pads,
            groups,
            weights: Vec::new(),
            bias: Vec::new(),
            act: Act::None,
        }
    }

    /// A value that names its position: output channel, input channel (within the group), row,
    /// column.
    fn tag(co: usize, ci: usize, y: usize, x: usize) -> f32 {
        (co * 1000 + ci * 100 + y * 10 + x) as f32
    }

    #[test]
    fn cudnn_filters_are_the_plan_weights_in_krsc_order() {
        let (cin, cout, groups, [kh, kw]) = (6, 4, 2, [3, 2]);
        let (cin_g, cout_g) = (cin / groups, cout / groups);
        let mut c = conv([kh, kw], [1, 1], [1, 1, 1, 1], groups);
        c.bias = vec![0.0; cout];
        c.weights = vec![0.0; groups * kh * kw * cin_g * cout_g];
        for g in 0..groups {
            for y in 0..kh {
                for x in 0..kw {
                    for i in 0..cin_g {
                        for o in 0..cout_g {
                            c.weights[(((g * kh + y) * kw + x) * cin_g + i) * cout_g + o] =
                                tag(g * cout_g + o, i, y, x);
                        }
                    }
                }
            }
        }
        let filter = krsc(&c, cin);
        let mut expected = Vec::new();
        for co in 0..cout {
            for y in 0..kh {
                for x in 0..kw {
                    for i in 0..cin_g {
                        expected.push(tag(co, i, y, x));
                    }
                }
            }
        }
        assert_eq!(filter, expected);
    }

    #[test]
    fn padding_cudnn_cannot_express_takes_the_direct_kernel() {
        // TF "SAME", stride 2: no padding on top, one row below; cuDNN's symmetric zero padding
        // gives 111 rows, the plan 112.
        assert!(!symmetric_fits(
            &conv([3, 3], [2, 2], [0, 0, 1, 1], 1),
            [224, 224],
            [112, 112]
        ));
        // PyTorch's symmetric padding.
        assert!(symmetric_fits(
            &conv([3, 3], [2, 2], [1, 1, 1, 1], 1),
            [224, 224],
            [112, 112]
        ));
        // Extra padding below that no window reaches: cuDNN's size is the plan's.
        assert!(symmetric_fits(
            &conv([3, 3], [2, 2], [1, 1, 2, 2], 1),
            [224, 224],
            [112, 112]
        ));
        // A window larger than the padded input.
        assert!(!symmetric_fits(
            &conv([5, 5], [1, 1], [0; 4], 1),
            [3, 3],
            [1, 1]
        ));
    }

    #[test]
    fn four_channel_kernels_only_for_multiples_of_four() {
        assert_eq!(vector(96, "one", "four"), ("four", 24));
        assert_eq!(vector(3, "one", "four"), ("one", 3));
        assert_eq!(vector(1002, "one", "four"), ("one", 1002));
    }
}
