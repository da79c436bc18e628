//! The device's own kernels (`kernels.cu`): compiled by NVRTC for the GPU's architecture on first
//! use, the PTX cached on disk under a key of everything that changes it (source, options,
//! NVRTC's version, architecture), so a later process loads it without compiling.

use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{self, CompileOptions, Ptx};
use sha2::{Digest, Sha256};

use super::GpuError;

/// The CUDA C source of every kernel.
pub const SOURCE: &str = include_str!("kernels.cu");

/// The kernels' names, as `extern "C"` in [`SOURCE`].
pub const NAMES: [&str; 16] = [
    "transpose_batch",
    "epilogue",
    "pointwise",
    "direct_conv",
    "depthwise",
    "pool",
    "global_average",
    "concat_slice",
    "lrn",
    "softmax",
    "compose",
    "epilogue4",
    "depthwise4",
    "upsample_maps",
    "mask_range",
    "mask_images",
];

/// NVRTC's version as `major.minor`.
pub fn nvrtc_version() -> Result<String, GpuError> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid places for NVRTC to write ints.
    #[allow(unsafe_code)]
    unsafe { nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| GpuError(format!("nvrtcVersion: {e:?}")))?;
    Ok(format!("{major}.{minor}"))
}

/// The options for `arch` (`sm_90`, …).
fn options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "-default-device".into(),
    ]
}

/// Compile [`SOURCE`] to PTX for `arch`.
pub fn compile(arch: &str) -> Result<String, GpuError> {
    let ptx = nvrtc::compile_ptx_with_opts(
        SOURCE,
        CompileOptions {
            options: options(arch),
            name: Some("camlime_kernels.cu".into()),
            ..Default::default()
        },
    )
    .map_err(|e| {
        GpuError(format!(
            "NVRTC could not compile the kernels for {arch}: {e}"
        ))
    })?;
    Ok(ptx.to_src())
}

/// Where compiled PTX is kept: `$CAMLIME_CACHE` or `$XDG_CACHE_HOME/camlime` or
/// `~/.cache/camlime`, then `ptx/`.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("CAMLIME_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("camlime")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/camlime")))?;
    Some(base.join("ptx"))
}

/// PTX for `arch`, from the disk cache or freshly compiled (and then cached; a cache that cannot
/// be written only costs the next process a compile).
pub fn ptx(arch: &str) -> Result<String, GpuError> {
    let mut key = Sha256::new();
    key.update(SOURCE);
    key.update(options(arch).join(" "));
    key.update(nvrtc_version()?);
    key.update(arch);
    let name = format!("{:x}.ptx", key.finalize());
    let path = cache_dir().map(|dir| dir.join(name));
    if let Some(text) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        return Ok(text);
    }
    let text = compile(arch)?;
    if let Some(path) = path {
        let written = path
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .and_then(|_| {
                let partial = path.with_extension("partial");
                std::fs::write(&partial, &text)?;
                std::fs::rename(&partial, &path)
            });
        if let Err(e) = written {
            eprintln!("camlime: PTX cache {} not written: {e}", path.display());
        }
    }
    Ok(text)
}

/// The loaded kernels of one context.
#[derive(Debug)]
pub struct Kernels {
    _module: Arc<CudaModule>,
    functions: Vec<CudaFunction>,
}

impl Kernels {
    /// Compile (or load from the cache) and load every kernel for `ctx`'s GPU.
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self, GpuError> {
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| GpuError(format!("compute capability: {e}")))?;
        let arch = format!("sm_{major}{minor}");
        let module = ctx
            .load_module(Ptx::from_src(ptx(&arch)?))
            .map_err(|e| GpuError(format!("loading the kernels' PTX: {e}")))?;
        let functions = NAMES
            .iter()
            .map(|name| {
                module
                    .load_function(name)
                    .map_err(|e| GpuError(format!("kernel {name}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            _module: module,
            functions,
        })
    }

    /// The kernel called `name` (one of [`NAMES`]).
    pub fn get(&self, name: &str) -> Result<&CudaFunction, GpuError> {
        NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| &self.functions[i])
            .ok_or_else(|| GpuError(format!("no kernel named {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel compiles with the real NVRTC for the GPUs we target, and the PTX defines each
    /// kernel the plan launches. Needs libnvrtc (CI installs the `nvidia-cuda-nvrtc` wheel's copy
    /// and sets `LD_LIBRARY_PATH`); without it the test says so and checks nothing else.
    #[test]
    fn every_kernel_compiles_for_sm80_and_sm90() {
        // SAFETY: only asks the dynamic loader for the library.
        #[allow(unsafe_code)]
        let present = unsafe { nvrtc::sys::is_culib_present() };
        if !present {
            assert!(
                std::env::var_os("CAMLIME_REQUIRE_NVRTC").is_none(),
                "CAMLIME_REQUIRE_NVRTC is set but libnvrtc cannot be loaded"
            );
            eprintln!("libnvrtc not found: the kernels were not compiled");
            return;
        }
        for arch in ["sm_80", "sm_90"] {
            let ptx = compile(arch).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                ptx.contains(&format!(".target {arch}")),
                "{arch}: {}",
                &ptx[..200.min(ptx.len())]
            );
            for name in NAMES {
                assert!(
                    ptx.contains(&format!(".entry {name}(")),
                    "{arch}: no kernel {name}"
                );
            }
            let Some(ptxas) = std::env::var_os("CAMLIME_PTXAS") else {
                assert!(
                    std::env::var_os("CAMLIME_REQUIRE_NVRTC").is_none(),
                    "CAMLIME_REQUIRE_NVRTC is set but CAMLIME_PTXAS is not"
                );
                eprintln!("CAMLIME_PTXAS not set: the PTX was not assembled");
                continue;
            };
            let file = std::env::temp_dir()
                .join(format!("camlime-kernels-{}-{arch}.ptx", std::process::id()));
            std::fs::write(&file, &ptx).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let assembled = std::process::Command::new(&ptxas)
                .arg(format!("-arch={arch}"))
                .arg(&file)
                .args(["-o", "/dev/null"])
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", ptxas.to_string_lossy()));
            let _ = std::fs::remove_file(&file);
            assert!(
                assembled.status.success(),
                "ptxas -arch={arch}: {}",
                String::from_utf8_lossy(&assembled.stderr)
            );
        }
    }
}
