//! Finding a usable NVIDIA GPU — the first layer of the CUDA backend (issue 8), which needs no
//! CUDA at build time: cudarc loads every library at run time.
//!
//! **Invariant:** nothing here lets cudarc panic. cudarc opens a library on the first call into
//! it and panics when the library is missing, so each library is probed with its
//! `is_culib_present()` before any call, the driver's calls run only after the driver library was
//! found, and those calls sit inside `catch_unwind` (an old driver lacking a symbol panics too).
//! A machine without CUDA gets a [`Probe`] that says why, never an abort.

use serde::Serialize;

/// The libraries the executor loads, by cudarc's module name.
const LIBRARIES: [(&str, &str); 5] = [
    ("driver", "libcuda (the NVIDIA driver)"),
    ("nvrtc", "libnvrtc (runtime kernel compilation)"),
    ("cublas", "libcublas"),
    ("cublaslt", "libcublasLt"),
    ("cudnn", "libcudnn"),
];

/// Whether one library can be loaded.
#[derive(Clone, Debug, Serialize)]
pub struct Library {
    /// cudarc's name for it (`driver`, `nvrtc`, `cublas`, `cublaslt`, `cudnn`).
    pub name: &'static str,
    /// What it is.
    pub title: &'static str,
    /// Whether the dynamic loader opened it.
    pub present: bool,
}

/// One GPU the driver reports.
#[derive(Clone, Debug, Serialize)]
pub struct Gpu {
    /// Its ordinal (`CUDA_VISIBLE_DEVICES` order).
    pub ordinal: i32,
    /// Its name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Its memory in bytes.
    pub memory_bytes: u64,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
}

/// What the CUDA probe found.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    /// Each library the executor needs, present or not.
    pub libraries: Vec<Library>,
    /// The driver's CUDA version as `major.minor`, when the driver answered.
    pub driver_version: Option<String>,
    /// The GPUs the driver reports.
    pub gpus: Vec<Gpu>,
    /// Why no GPU can be used, when none can.
    pub problem: Option<String>,
}

impl Probe {
    /// Whether a GPU and every library the executor needs are there.
    pub fn usable(&self) -> bool {
        self.problem.is_none()
    }
}

/// Whether cudarc can open `library` (one of [`LIBRARIES`]).
// The probes are cudarc's own `unsafe fn is_culib_present`: each only asks the dynamic loader to
// open the library's candidate file names, which has no precondition.
#[allow(unsafe_code)]
fn present(library: &str) -> bool {
    use cudarc::{cublas, cublaslt, cudnn, driver, nvrtc};
    // SAFETY: see above; no library function is called.
    unsafe {
        match library {
            "driver" => driver::sys::is_culib_present(),
            "nvrtc" => nvrtc::sys::is_culib_present(),
            "cublas" => cublas::sys::is_culib_present(),
            "cublaslt" => cublaslt::sys::is_culib_present(),
            "cudnn" => cudnn::sys::is_culib_present(),
            _ => false,
        }
    }
}

/// The driver's version and GPUs; called only once libcuda is known to load.
#[allow(unsafe_code)]
fn query_driver() -> Result<(String, Vec<Gpu>), String> {
    use cudarc::driver::result::{self, device};
    use cudarc::driver::sys;
    result::init().map_err(|e| format!("the driver did not initialise (cuInit: {e})"))?;
    let mut version = 0;
    // SAFETY: `version` is a valid place for the driver to write an int.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| format!("cuDriverGetVersion: {e}"))?;
    let count = device::get_count().map_err(|e| format!("cuDeviceGetCount: {e}"))?;
    let mut gpus = Vec::new();
    for ordinal in 0..count {
        let dev = device::get(ordinal).map_err(|e| format!("cuDeviceGet({ordinal}): {e}"))?;
        let name = device::get_name(dev).map_err(|e| format!("cuDeviceGetName: {e}"))?;
        // SAFETY: `dev` came from `device::get`, as these functions require.
        let (memory, major, minor) = unsafe {
            (
                device::total_mem(dev),
                device::get_attribute(
                    dev,
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                ),
                device::get_attribute(
                    dev,
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                ),
            )
        };
        let query = |e: cudarc::driver::DriverError| format!("{name}: {e}");
        gpus.push(Gpu {
            ordinal,
            name: name.clone(),
            memory_bytes: memory.map_err(query)? as u64,
            compute_capability: (major.map_err(query)?, minor.map_err(query)?),
        });
    }
    Ok((
        format!("{}.{}", version / 1000, (version % 1000) / 10),
        gpus,
    ))
}

/// Look for CUDA: the libraries, then the driver's version and GPUs.
pub fn probe() -> Probe {
    let libraries: Vec<Library> = LIBRARIES
        .iter()
        .map(|&(name, title)| Library {
            name,
            title,
            present: present(name),
        })
        .collect();
    let mut probe = Probe {
        libraries,
        driver_version: None,
        gpus: Vec::new(),
        problem: None,
    };
    if !probe.libraries[0].present {
        probe.problem = Some("no NVIDIA driver: libcuda cannot be loaded".into());
        return probe;
    }
    match std::panic::catch_unwind(query_driver) {
        Ok(Ok((version, gpus))) => {
            probe.driver_version = Some(version);
            probe.gpus = gpus;
        }
        Ok(Err(message)) => probe.problem = Some(message),
        Err(_) => {
            probe.problem = Some("the NVIDIA driver lacks a function cudarc needs".into());
        }
    }
    if probe.problem.is_none() {
        let missing: Vec<&str> = probe
            .libraries
            .iter()
            .filter(|l| !l.present)
            .map(|l| l.title)
            .collect();
        probe.problem = if probe.gpus.is_empty() {
            Some("the NVIDIA driver reports no GPU".into())
        } else if !missing.is_empty() {
            Some(format!("missing CUDA libraries: {}", missing.join(", ")))
        } else {
            None
        };
    }
    probe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_never_panics_and_explains_itself() {
        let found = probe();
        assert_eq!(
            found.libraries.iter().map(|l| l.name).collect::<Vec<_>>(),
            ["driver", "nvrtc", "cublas", "cublaslt", "cudnn"]
        );
        if found.usable() {
            assert!(!found.gpus.is_empty());
            assert!(found.libraries.iter().all(|l| l.present));
            assert!(found.driver_version.is_some());
        } else {
            let problem = found.problem.as_deref().unwrap_or_default();
            assert!(!problem.is_empty());
            if !found.libraries[0].present {
                assert!(problem.contains("libcuda"), "{problem}");
                assert!(found.gpus.is_empty() && found.driver_version.is_none());
            }
        }
    }
}
