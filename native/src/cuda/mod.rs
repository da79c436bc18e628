//! The CUDA device (issue 19): cudarc loads every library at run time, so this builds anywhere
//! and a machine without CUDA gets a clear answer, never an abort.
//!
//! - [`probe`]: which libraries and GPUs there are.
//! - `kernels`: our NVRTC kernels (`kernels.cu`), PTX cached on disk.
//! - `dnn`: raw cuDNN / cuBLAS handles and descriptors.
//! - `plan`: the lowered CNN plan on the GPU ([`CudaEngine`], [`CudaPlan`]).
//! - [`check`]: `camlime devices --check`, the GPU against the CPU and its throughput.

pub mod check;
mod dnn;
pub mod kernels;
mod plan;
mod probe;

pub use dnn::{Precision, dnn_version};
pub use plan::{CudaEngine, CudaPlan, Runtime};
pub use probe::{Gpu, Library, Probe, probe};

/// A CUDA failure, with the call that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuError(pub String);

impl GpuError {
    /// Map a driver error of `call`.
    pub fn driver(call: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Self {
        move |e| Self(format!("{call}: {e}"))
    }
}

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GpuError {}
