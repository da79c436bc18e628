//! Finding and loading models: the bundled ones by name (through `models/manifest.json`) or a
//! user's ONNX file by path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use camlime_core::detection::BoxChoice;
use camlime_core::engine::{Engine, EngineChoice};
use camlime_core::face::FaceInfo;
use camlime_core::manifest::parse_labels;
use camlime_core::task::crop_face;
use camlime_core::{Classifier, Manifest, ModelSpec};
use image::RgbImage;

use crate::cuda::{CudaEngine, Precision};

/// The bundled models' folder: `--models-dir`, else `$CAMLIME_MODELS`, else `models/` beside the
/// executable or one of its parents, else the source tree's `models/`.
pub fn models_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = std::env::var_os("CAMLIME_MODELS") {
        return Ok(PathBuf::from(dir));
    }
    let beside_executable = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .skip(1)
            .map(|a| a.join("models"))
            .find(|d| d.join("manifest.json").is_file())
    });
    let source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    beside_executable
        .or_else(|| {
            source_tree
                .join("manifest.json")
                .is_file()
                .then_some(source_tree)
        })
        .context("cannot find the bundled models: pass --models-dir or set CAMLIME_MODELS")
}

/// The bundled models' manifest and where it lives.
#[derive(Debug)]
pub struct Bundle {
    /// Folder of the manifest.
    pub dir: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
}

impl Bundle {
    /// Read the manifest of a models folder.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let manifest =
            Manifest::from_json(&text).with_context(|| format!("in {}", path.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            manifest,
        })
    }

    /// The bytes of `file`, relative to the manifest.
    pub fn read(&self, file: &str) -> Result<Vec<u8>> {
        let path = self.dir.join(file);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    }

    /// The face a face model explains in `photo`: the `face`-th (best first, default the best)
    /// its detector finds, cropped with its margin; `None` for any other model (which may not be
    /// given a face).
    pub fn face_of(
        &self,
        model: &LoadedModel,
        photo: &RgbImage,
        face: Option<usize>,
    ) -> Result<Option<(RgbImage, FaceInfo)>> {
        let Some(crop) = &model.classifier.spec().face else {
            if face.is_some() {
                bail!(
                    "--face chooses the face a face model explains; `{}` is not one",
                    model.name
                );
            }
            return Ok(None);
        };
        let detector = self.load(&crop.detector)?;
        let choice = BoxChoice {
            index: face,
            class: None,
        };
        let (image, info) = crop_face(&detector.classifier, photo, &choice, crop)
            .with_context(|| format!("`{}` explains faces", model.name))?;
        Ok(Some((image, info)))
    }

    /// Load a model: a bundled name, or a path to an `.onnx` file.
    pub fn load(&self, model: &str) -> Result<LoadedModel> {
        let as_path = Path::new(model);
        if self.manifest.model(model).is_err() && (model.ends_with(".onnx") || as_path.is_file()) {
            return self.load_file(as_path);
        }
        let entry = self.manifest.model(model)?;
        let labels =
            String::from_utf8(self.read(&entry.labels)?).context("labels file is not UTF-8")?;
        let bytes = self.read(&entry.file)?;
        let classifier = Classifier::new(&bytes, entry.spec(&labels)?)
            .with_context(|| format!("cannot load bundled model `{}`", entry.name))?;
        Ok(LoadedModel {
            name: entry.name.clone(),
            title: entry.title.clone(),
            licence: entry.licence.clone(),
            classifier,
        })
    }

    /// Load a user's ONNX classifier with ImageNet preprocessing (and ImageNet class names when it
    /// has 1000 classes).
    pub fn load_file(&self, path: &Path) -> Result<LoadedModel> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?;
        let name = path
            .file_stem()
            .map_or_else(|| "model".to_owned(), |s| s.to_string_lossy().into_owned());
        let mut classifier = Classifier::new(&bytes, ModelSpec::user_model(&name))
            .with_context(|| format!("cannot load {}", path.display()))?;
        if classifier.num_classes() == 1000 {
            let labels = self.read("imagenet_classes.txt")?;
            classifier = classifier.with_labels(parse_labels(&String::from_utf8_lossy(&labels)))?;
        }
        Ok(LoadedModel {
            title: format!("{name} (from {})", path.display()),
            licence: "unknown (user model)".into(),
            name,
            classifier,
        })
    }
}

/// A classifier with the name it was asked for by, and what the manifest says of it: what the
/// CLI runs and the server serves.
#[derive(Debug)]
pub struct LoadedModel {
    /// Bundled name or file stem.
    pub name: String,
    /// What it is (the manifest's title; a user's file names its path).
    pub title: String,
    /// Licence of the weights.
    pub licence: String,
    /// The classifier.
    pub classifier: Classifier,
}

/// Where forward passes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The GPU when CUDA is usable, else the CPU.
    Auto,
    /// The CPU's engines only.
    Cpu,
    /// The GPU; an error when there is none.
    Cuda,
}

/// `--device` and `--precision`.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct DeviceArgs {
    /// Where forward passes run: `auto` (the GPU when CUDA is usable), `cpu` or `cuda`.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// GPU arithmetic: `tf32` (tensor cores) or `fp32` (strict).
    #[arg(long, default_value = "tf32")]
    pub precision: Precision,
}

/// Images one GPU plan runs at a time: enough to fill an H100/H200, little enough that the
/// arena of MobileNetV2-sized models stays under 16 GB.
pub const GPU_BATCH: usize = 1024;

impl LoadedModel {
    /// Run forward passes on `device` and `engine` (`auto` keeps the automatic choice; an
    /// engine named `cuda` is the GPU).
    pub fn on_device(mut self, device: DeviceArgs, engine: &EngineChoice) -> Result<Self> {
        let named_cuda = *engine == EngineChoice::Named("cuda".into());
        let gpu = match device.device {
            Device::Cuda => true,
            Device::Cpu => false,
            Device::Auto => {
                named_cuda || (*engine == EngineChoice::Auto && crate::cuda::probe().usable())
            }
        };
        if device.device == Device::Cpu && named_cuda {
            bail!("--engine cuda contradicts --device cpu");
        }
        if !gpu {
            return self.on_engine(engine);
        }
        let mut engines: Vec<Arc<dyn Engine>> = vec![CudaEngine::shared(device.precision)];
        engines.extend(camlime_core::engine::default_engines());
        // `--device cuda` insists on the GPU; `auto` takes it first and falls back to the CPU
        // with the reason in the engine report (a driver that loads but a GPU that fails).
        let choice = match (device.device, engine) {
            (Device::Cuda, EngineChoice::Auto) => EngineChoice::Named("cuda".into()),
            (_, choice) => choice.clone(),
        };
        let classifier = self
            .classifier
            .with_engines(engines)
            .and_then(|c| c.with_engine_choice(choice))
            .with_context(|| format!("model `{}` on the GPU", self.name))?;
        self.classifier = if classifier.on_device() {
            classifier.with_batch_size(GPU_BATCH)?
        } else {
            classifier
        };
        Ok(self)
    }

    /// Run forward passes on `engine` (`auto` keeps the automatic choice).
    pub fn on_engine(mut self, engine: &EngineChoice) -> Result<Self> {
        if *engine != EngineChoice::Auto {
            self.classifier = self
                .classifier
                .with_engine_choice(engine.clone())
                .with_context(|| format!("model `{}` on engine `{engine}`", self.name))?;
        }
        Ok(self)
    }
}

/// Fail early with a clear message when an image path does not exist.
pub fn read_image(path: &Path) -> Result<Vec<u8>> {
    if !path.exists() {
        bail!("image not found: {}", path.display());
    }
    std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))
}

#[cfg(test)]
mod tests {

    use super::*;

    /// `--device cuda` runs on the GPU or fails saying why; `auto` runs on the GPU when one works
    /// and on the CPU's lowered plan otherwise; `cpu` never touches CUDA.
    #[test]
    fn devices_choose_the_engine_or_say_why_not() {
        let bundle = Bundle::open(&models_dir(None).unwrap()).unwrap();
        let load = |device| {
            bundle.load("mobilenet_v2").unwrap().on_device(
                DeviceArgs {
                    device,
                    precision: Precision::Tf32,
                },
                &EngineChoice::Auto,
            )
        };
        let cpu = load(Device::Cpu).unwrap();
        assert_eq!(cpu.classifier.engine_report().forward, "cnn");
        let auto = load(Device::Auto).unwrap();
        match load(Device::Cuda) {
            Ok(gpu) => {
                assert_eq!(gpu.classifier.engine_report().forward, "cuda");
                assert_eq!(auto.classifier.engine_report().forward, "cuda");
                assert_eq!(gpu.classifier.batch_size(), GPU_BATCH);
            }
            Err(e) => {
                let message = format!("{e:#}");
                assert!(message.contains("no CUDA device"), "{message}");
                assert_eq!(auto.classifier.engine_report().forward, "cnn");
                assert_eq!(auto.classifier.batch_size(), cpu.classifier.batch_size());
            }
        }
    }
}
