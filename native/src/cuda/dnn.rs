//! Raw cuDNN and cuBLAS handles and descriptors, each owned by one value that destroys it.
//!
//! Why not cudarc's safe wrappers: they tie every tensor to a `CudaSlice` borrow, and the plan
//! keeps all activations in one allocation addressed by offsets (a convolution reads one range
//! of it and writes another), so the calls here take raw device addresses. Every call's status
//! becomes a [`GpuError`] naming the call.

// Every function here is a foreign call into cuDNN or cuBLAS: unsafe by nature, each with its
// SAFETY note.
#![allow(unsafe_code)]

use std::ffi::c_void;

use cudarc::cublas::sys as blas;
use cudarc::cudnn::sys as dnn;
use cudarc::driver::sys::{CUdeviceptr, CUstream};

use super::GpuError;

/// How convolutions and products may round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Tensor cores with TF32 inputs (10-bit mantissa), FP32 accumulation: the default.
    Tf32,
    /// FP32 arithmetic only (FMA kernels).
    Strict,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "tf32" => Ok(Self::Tf32),
            "fp32" | "strict" => Ok(Self::Strict),
            other => Err(format!("unknown precision `{other}`: tf32 or fp32")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tf32 => "tf32",
            Self::Strict => "fp32",
        })
    }
}

fn dnn_check(status: dnn::cudnnStatus_t, call: &str) -> Result<(), GpuError> {
    status
        .result()
        .map_err(|e| GpuError(format!("{call}: {e:?}")))
}

/// `v` as the C `int` the libraries take.
fn int(v: usize) -> Result<i32, GpuError> {
    i32::try_from(v).map_err(|_| GpuError(format!("{v} exceeds int")))
}

fn blas_check(status: blas::cublasStatus_t, call: &str) -> Result<(), GpuError> {
    status
        .result()
        .map_err(|e| GpuError(format!("{call}: {e:?}")))
}

/// A cuDNN handle bound to one stream.
#[derive(Debug)]
pub struct Dnn(dnn::cudnnHandle_t);

impl Dnn {
    /// A handle whose calls run on `stream`.
    pub fn new(stream: CUstream) -> Result<Self, GpuError> {
        let mut handle = std::ptr::null_mut();
        // SAFETY: `handle` is a valid place for cuDNN to write the new handle.
        dnn_check(unsafe { dnn::cudnnCreate(&mut handle) }, "cudnnCreate")?;
        let dnn = Self(handle);
        // SAFETY: the handle was just created; the stream outlives it (the runtime owns both).
        dnn_check(
            unsafe { dnn::cudnnSetStream(dnn.0, stream as dnn::cudaStream_t) },
            "cudnnSetStream",
        )?;
        Ok(dnn)
    }
}

impl Drop for Dnn {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreate, destroyed once.
        unsafe { dnn::cudnnDestroy(self.0) };
    }
}

/// A cuBLAS handle bound to one stream, computing in FP32.
#[derive(Debug)]
pub struct Blas(blas::cublasHandle_t);

impl Blas {
    /// A handle whose calls run on `stream`.
    pub fn new(stream: CUstream) -> Result<Self, GpuError> {
        let mut handle = std::ptr::null_mut();
        // SAFETY: `handle` is a valid place for cuBLAS to write the new handle.
        blas_check(
            unsafe { blas::cublasCreate_v2(&mut handle) },
            "cublasCreate",
        )?;
        let blas = Self(handle);
        // SAFETY: the handle was just created; the stream outlives it.
        blas_check(
            unsafe { blas::cublasSetStream_v2(blas.0, stream as blas::cudaStream_t) },
            "cublasSetStream",
        )?;
        // Products (the classifier's last layer) stay FP32 in every precision: they are under 1 %
        // of the work, and TF32 rounding of 1280-term sums moves the logits most.
        // SAFETY: a live handle.
        blas_check(
            unsafe { blas::cublasSetMathMode(blas.0, blas::cublasMath_t::CUBLAS_PEDANTIC_MATH) },
            "cublasSetMathMode",
        )?;
        Ok(blas)
    }

    /// Row-major `out[rows][n] = x[rows][k] · w[k][n]` (column-major `outᵀ = wᵀ · xᵀ`).
    pub fn product(
        &self,
        [rows, k, n]: [usize; 3],
        x: CUdeviceptr,
        w: CUdeviceptr,
        out: CUdeviceptr,
    ) -> Result<(), GpuError> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (m, nn, kk) = (int(n)?, int(rows)?, int(k)?);
        // SAFETY: the caller passes device addresses of at least rows·k, k·n and rows·n floats.
        blas_check(
            unsafe {
                blas::cublasSgemm_v2(
                    self.0,
                    blas::cublasOperation_t::CUBLAS_OP_N,
                    blas::cublasOperation_t::CUBLAS_OP_N,
                    m,
                    nn,
                    kk,
                    &alpha,
                    w as *const f32,
                    m,
                    x as *const f32,
                    kk,
                    &beta,
                    out as *mut f32,
                    m,
                )
            },
            "cublasSgemm",
        )
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: created by cublasCreate, destroyed once.
        unsafe { blas::cublasDestroy_v2(self.0) };
    }
}

/// An NHWC float tensor descriptor.
#[derive(Debug)]
struct TensorDesc(dnn::cudnnTensorDescriptor_t);

impl TensorDesc {
    fn nhwc([n, c, h, w]: [i32; 4]) -> Result<Self, GpuError> {
        let mut desc = std::ptr::null_mut();
        // SAFETY: `desc` is a valid place for the new descriptor.
        dnn_check(
            unsafe { dnn::cudnnCreateTensorDescriptor(&mut desc) },
            "cudnnCreateTensorDescriptor",
        )?;
        let tensor = Self(desc);
        // SAFETY: a live descriptor.
        dnn_check(
            unsafe {
                dnn::cudnnSetTensor4dDescriptor(
                    tensor.0,
                    dnn::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
                    dnn::cudnnDataType_t::CUDNN_DATA_FLOAT,
                    n,
                    c,
                    h,
                    w,
                )
            },
            "cudnnSetTensor4dDescriptor",
        )?;
        Ok(tensor)
    }
}

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once.
        unsafe { dnn::cudnnDestroyTensorDescriptor(self.0) };
    }
}

#[derive(Debug)]
struct FilterDesc(dnn::cudnnFilterDescriptor_t);

impl Drop for FilterDesc {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once.
        unsafe { dnn::cudnnDestroyFilterDescriptor(self.0) };
    }
}

#[derive(Debug)]
struct ConvDesc(dnn::cudnnConvolutionDescriptor_t);

impl Drop for ConvDesc {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once.
        unsafe { dnn::cudnnDestroyConvolutionDescriptor(self.0) };
    }
}

/// The geometry of one convolution for one batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Images.
    pub n: usize,
    /// Input `[c, h, w]`.
    pub input: [usize; 3],
    /// Output `[c, h, w]`.
    pub output: [usize; 3],
    /// Window rows, columns.
    pub kernel: [usize; 2],
    /// Top and left padding (cuDNN pads symmetrically; see [`Convolution::new`]).
    pub pads: [usize; 2],
    /// Rows, columns.
    pub stride: [usize; 2],
    /// Rows, columns.
    pub dilation: [usize; 2],
    /// Channel groups.
    pub groups: usize,
}

/// One cuDNN convolution, its algorithm found once by timing every candidate.
#[derive(Debug)]
pub struct Convolution {
    x: TensorDesc,
    w: FilterDesc,
    conv: ConvDesc,
    y: TensorDesc,
    algo: dnn::cudnnConvolutionFwdAlgo_t,
    /// Bytes of workspace the algorithm needs.
    pub workspace: usize,
}

// SAFETY: descriptors are host-side parameter blocks; the plan reaches a convolution only through
// its instances' mutex, so one thread at a time uses it.
unsafe impl Send for Convolution {}

impl Convolution {
    /// Describe the convolution and time cuDNN's algorithms for it (cudnnFind, which allocates
    /// its own buffers). `None` when cuDNN's symmetric padding gives another output size than
    /// the plan's (asymmetric padding): the caller runs its own kernel.
    pub fn new(
        handle: &Dnn,
        shape: &ConvShape,
        precision: Precision,
        max_workspace: usize,
    ) -> Result<Option<Self>, GpuError> {
        let [cin, h, w] = shape.input;
        let [cout, oh, ow] = shape.output;
        let n = int(shape.n)?;
        let x = TensorDesc::nhwc([n, int(cin)?, int(h)?, int(w)?])?;
        let y = TensorDesc::nhwc([n, int(cout)?, int(oh)?, int(ow)?])?;
        let mut filter = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        dnn_check(
            unsafe { dnn::cudnnCreateFilterDescriptor(&mut filter) },
            "cudnnCreateFilterDescriptor",
        )?;
        let filter = FilterDesc(filter);
        // SAFETY: a live descriptor.
        dnn_check(
            unsafe {
                dnn::cudnnSetFilter4dDescriptor(
                    filter.0,
                    dnn::cudnnDataType_t::CUDNN_DATA_FLOAT,
                    dnn::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
                    int(cout)?,
                    int(cin / shape.groups)?,
                    int(shape.kernel[0])?,
                    int(shape.kernel[1])?,
                )
            },
            "cudnnSetFilter4dDescriptor",
        )?;
        let mut conv = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        dnn_check(
            unsafe { dnn::cudnnCreateConvolutionDescriptor(&mut conv) },
            "cudnnCreateConvolutionDescriptor",
        )?;
        let conv = ConvDesc(conv);
        // SAFETY: a live descriptor.
        dnn_check(
            unsafe {
                dnn::cudnnSetConvolution2dDescriptor(
                    conv.0,
                    int(shape.pads[0])?,
                    int(shape.pads[1])?,
                    int(shape.stride[0])?,
                    int(shape.stride[1])?,
                    int(shape.dilation[0])?,
                    int(shape.dilation[1])?,
                    dnn::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                    dnn::cudnnDataType_t::CUDNN_DATA_FLOAT,
                )
            },
            "cudnnSetConvolution2dDescriptor",
        )?;
        // SAFETY: a live descriptor.
        dnn_check(
            unsafe { dnn::cudnnSetConvolutionGroupCount(conv.0, int(shape.groups)?) },
            "cudnnSetConvolutionGroupCount",
        )?;
        let math = match precision {
            Precision::Tf32 => dnn::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            Precision::Strict => dnn::cudnnMathType_t::CUDNN_FMA_MATH,
        };
        // SAFETY: a live descriptor.
        dnn_check(
            unsafe { dnn::cudnnSetConvolutionMathType(conv.0, math) },
            "cudnnSetConvolutionMathType",
        )?;
        let mut dims = [0i32; 4];
        // SAFETY: live descriptors and four valid out-pointers.
        dnn_check(
            unsafe {
                let [a, b, c, d] = &mut dims;
                dnn::cudnnGetConvolution2dForwardOutputDim(conv.0, x.0, filter.0, a, b, c, d)
            },
            "cudnnGetConvolution2dForwardOutputDim",
        )?;
        if dims != [n, int(cout)?, int(oh)?, int(ow)?] {
            return Ok(None);
        }
        const CANDIDATES: usize = 8;
        // SAFETY: the perf struct is plain data; cuDNN overwrites the entries it returns.
        let mut found: [dnn::cudnnConvolutionFwdAlgoPerf_t; CANDIDATES] =
            unsafe { std::mem::zeroed() };
        let mut count = 0;
        // SAFETY: live descriptors, room for CANDIDATES results.
        dnn_check(
            unsafe {
                dnn::cudnnFindConvolutionForwardAlgorithm(
                    handle.0,
                    x.0,
                    filter.0,
                    conv.0,
                    y.0,
                    CANDIDATES as i32,
                    &mut count,
                    found.as_mut_ptr(),
                )
            },
            "cudnnFindConvolutionForwardAlgorithm",
        )?;
        // Results come fastest first; strict precision takes only FMA kernels.
        let best = found
            .iter()
            .take(count.max(0) as usize)
            .find(|perf| {
                perf.status == dnn::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                    && perf.memory <= max_workspace
                    && (precision == Precision::Tf32
                        || perf.mathType == dnn::cudnnMathType_t::CUDNN_FMA_MATH)
            })
            .ok_or_else(|| {
                GpuError(format!(
                    "cuDNN has no {precision} algorithm for convolution {shape:?}"
                ))
            })?;
        // SAFETY: a live descriptor; the found algorithm's math type.
        dnn_check(
            unsafe { dnn::cudnnSetConvolutionMathType(conv.0, best.mathType) },
            "cudnnSetConvolutionMathType",
        )?;
        Ok(Some(Self {
            x,
            w: filter,
            conv,
            y,
            algo: best.algo,
            workspace: best.memory,
        }))
    }

    /// `y = conv(x, w)`.
    ///
    /// # Safety
    /// `x`, `w` and `y` are device addresses of tensors of the described shapes, `workspace`
    /// of at least [`Self::workspace`] bytes, all on the handle's device.
    pub unsafe fn run(
        &self,
        handle: &Dnn,
        x: CUdeviceptr,
        w: CUdeviceptr,
        y: CUdeviceptr,
        workspace: CUdeviceptr,
    ) -> Result<(), GpuError> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: the caller's contract.
        dnn_check(
            unsafe {
                dnn::cudnnConvolutionForward(
                    handle.0,
                    (&alpha as *const f32).cast::<c_void>(),
                    self.x.0,
                    x as *const c_void,
                    self.w.0,
                    w as *const c_void,
                    self.conv.0,
                    self.algo,
                    workspace as *mut c_void,
                    self.workspace,
                    (&beta as *const f32).cast::<c_void>(),
                    self.y.0,
                    y as *mut c_void,
                )
            },
            "cudnnConvolutionForward",
        )
    }
}

/// cuDNN's version as `major.minor.patch`.
pub fn dnn_version() -> String {
    // SAFETY: no arguments; only called after the library was found.
    let v = unsafe { dnn::cudnnGetVersion() };
    format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
}
