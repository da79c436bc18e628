//! `camlime devices --check`: the CUDA device against the CPU's lowered plan on every bundled
//! model (the bundled sample photos, decoded and preprocessed as users' images are), outputs
//! poisoned with NaN before each GPU run, then the device's throughput per batch size.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use camlime_core::engine::cnn::Cnn;
use camlime_core::engine::{Composed, Engine, Masked, Plan, PlanRequest};
use camlime_core::ndarray::{Array2, Array3, Array4, ArrayD, Axis, concatenate};
use camlime_core::preprocess::{DecodeOptions, decode_image};

use super::{CudaEngine, Precision};
use crate::models::Bundle;

/// Logits of the GPU against the CPU, per image and worst over the images: the largest
/// difference relative to the largest CPU logit, the difference's norm relative to the CPU
/// logits' norm, and whether the top class agrees on every image.
fn compare(gpu: &[f32], cpu: &[f32], classes: usize) -> (f64, f64, bool) {
    let mut worst = 0.0f64;
    let mut worst_norm = 0.0f64;
    let mut agree = true;
    for (g, c) in gpu.chunks(classes).zip(cpu.chunks(classes)) {
        let scale = c.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        let (mut diff2, mut norm2) = (0.0f64, 0.0f64);
        for (a, b) in g.iter().zip(c) {
            let diff = if a.is_finite() {
                f64::from((a - b).abs() / scale)
            } else {
                f64::INFINITY
            };
            worst = worst.max(diff);
            diff2 += f64::from(a - b).powi(2);
            norm2 += f64::from(*b).powi(2);
        }
        let relative = (diff2 / norm2.max(1e-30)).sqrt();
        worst_norm = worst_norm.max(if relative.is_nan() {
            f64::INFINITY
        } else {
            relative
        });
        let arg = |v: &[f32]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
        };
        agree &= arg(g) == arg(c);
    }
    (worst, worst_norm, agree)
}

/// One way to run a plan on the check's batch.
type Case<'a> = &'a dyn Fn(&dyn Plan) -> camlime_core::Result<Vec<ArrayD<f32>>>;

/// The first output of a run (the logits), flattened.
fn logits(outputs: Vec<ArrayD<f32>>) -> Result<Vec<f32>> {
    let first = outputs.into_iter().next().context("no logits")?;
    Ok(first.iter().copied().collect())
}

/// Run the check on `batches` (throughput) and print a table.
pub fn check(bundle: &Bundle, batches: &[usize], runs: usize, out: &mut dyn Write) -> Result<()> {
    let probe = super::probe();
    if let Some(problem) = probe.problem {
        bail!("no CUDA device: {problem}");
    }
    let runtime = CudaEngine::shared(Precision::Tf32)
        .runtime()
        .map_err(|why| anyhow::anyhow!("the GPU did not open: {why}"))?;
    writeln!(
        out,
        "gpu: {}; driver {}; cuDNN {}; NVRTC {}",
        runtime.name,
        probe.driver_version.as_deref().unwrap_or("?"),
        super::dnn_version(),
        super::kernels::nvrtc_version()?
    )?;
    let limits = DecodeOptions::default();
    let mut table = Vec::new();
    let mut failures = Vec::new();
    for entry in &bundle.manifest.models {
        let model = bundle.load(&entry.name)?;
        let classifier = &model.classifier;
        let mut images = Vec::new();
        for sample in &bundle.manifest.samples {
            let bytes = bundle.read(&sample.file)?;
            images.push(
                classifier
                    .spec()
                    .preprocessing
                    .base_image(&decode_image(&bytes, &limits)?)?,
            );
        }
        let photos = classifier.spec().preprocessing.tensor(&images)?;
        // Eight images: the photos and their mirror images.
        let mirrored = photos
            .slice(camlime_core::ndarray::s![.., .., .., ..;-1])
            .to_owned();
        let input: Array4<f32> = concatenate(Axis(0), &[photos.view(), mirrored.view()])?;
        let n = input.dim().0;
        let request = PlanRequest {
            batch: n,
            start: None,
            outputs: vec![classifier.logits_name().to_owned()],
        };
        let classes = classifier.num_classes();
        // LIME's samples composed from the first photo and a grey fill, 16×16-pixel segments,
        // a fixed pattern of kept segments: on the host for the CPU, on the device for the GPU.
        let (_, _, h, w) = input.dim();
        let segments: Vec<u32> = (0..h * w)
            .map(|p| ((p / w / 16) * w.div_ceil(16) + (p % w) / 16) as u32)
            .collect();
        let count = segments.iter().max().map_or(0, |&m| m as usize + 1);
        let keep = Array2::from_shape_fn((n, count), |(i, s)| (i * 7 + s * 13) % 5 < 3);
        let grey = Array3::<f32>::zeros((input.dim().1, h, w));
        let composed = Composed {
            on: input.index_axis(Axis(0), 0),
            off: grey.view(),
            segments: &segments,
            keep: keep.view(),
        };
        // Score-CAM's batch: the first photo times eight 7×7 maps, upsampled and scaled.
        let maps = Array3::from_shape_fn((n, 7, 7), |(k, y, x)| {
            ((k * 49 + y * 7 + x) as f32 * 0.37).sin()
        });
        let masked = Masked {
            image: input.index_axis(Axis(0), 0),
            maps: maps.view(),
        };
        let images = [input.view().into_dyn()];
        let cases: [(&str, Case); 3] = [
            ("logits", &|plan| plan.run(&images)),
            ("LIME samples composed", &|plan| {
                plan.run_composed(&composed)
            }),
            ("Score-CAM images built", &|plan| plan.run_masked(&masked)),
        ];
        let cpu_plan = Cnn
            .compile(classifier.graph(), &request)
            .with_context(|| format!("{}: the CPU plan", entry.name))?;
        let cpu = cases
            .iter()
            .map(|(_, case)| logits(case(cpu_plan.as_ref())?))
            .collect::<Result<Vec<_>>>()?;
        for precision in [Precision::Strict, Precision::Tf32] {
            let engine = CudaEngine::shared(precision);
            let plan = engine
                .compile_plan(classifier.graph(), &request)
                .with_context(|| format!("{}: the CUDA plan ({precision})", entry.name))?;
            let bound = if precision == Precision::Strict {
                1e-5
            } else {
                1e-3
            };
            for ((what, case), cpu) in cases.iter().zip(&cpu) {
                plan.poison(n)?;
                let gpu = logits(case(&plan)?)?;
                let (error, norm, agree) = compare(&gpu, cpu, classes);
                let verdict = if error <= bound && agree {
                    "ok"
                } else {
                    failures.push(format!(
                        "{} {precision} {what}: error {error:.2e}, top-1 agree {agree}",
                        entry.name
                    ));
                    "FAIL"
                };
                writeln!(
                    out,
                    "{:<20} {precision:<5} {what} on the GPU vs the CPU: max error / max logit \
                     {error:.2e} (bound {bound:.0e}), error norm / norm {norm:.2e}, top-1 {} — {verdict}",
                    entry.name,
                    if agree { "same" } else { "DIFFERS" },
                )?;
            }
            if precision == Precision::Tf32 {
                let batch = batches.iter().copied().max().unwrap_or(1).min(256);
                let kinds = plan.profile(batch)?;
                let total: f64 = kinds.iter().map(|k| k.1).sum();
                writeln!(
                    out,
                    "{:<20} {precision:<5} where a batch of {batch} spends its time (each launch synchronised, {:.2} ms):",
                    entry.name,
                    total * 1e3
                )?;
                for (label, seconds, launches) in kinds {
                    writeln!(
                        out,
                        "    {label:<16} {:>8.3} ms {:>5.1} % in {launches} launches",
                        seconds * 1e3,
                        seconds / total * 100.0
                    )?;
                }
            }
            for &batch in batches {
                let resident = plan.time_resident(batch, runs)?;
                // From host memory: the NCHW batch in, the logits out.
                let host = Array4::from_shape_fn(
                    (batch, input.dim().1, input.dim().2, input.dim().3),
                    |(i, c, y, x)| input[[i % n, c, y, x]],
                );
                let view = [host.view().into_dyn()];
                plan.run(&view)?;
                let mut times = Vec::new();
                for _ in 0..runs.clamp(1, 5) {
                    let start = Instant::now();
                    plan.run(&view)?;
                    times.push(start.elapsed().as_secs_f64());
                }
                times.sort_by(f64::total_cmp);
                let from_host = times[times.len() / 2];
                table.push((entry.name.clone(), precision, batch, resident, from_host));
            }
        }
    }
    writeln!(
        out,
        "\n{:<20} {:<5} {:>6} {:>12} {:>12} {:>14}",
        "model", "prec", "batch", "img/s dev", "ms/batch", "img/s w/ copy"
    )?;
    for (name, precision, batch, resident, from_host) in &table {
        writeln!(
            out,
            "{name:<20} {precision:<5} {batch:>6} {:>12.0} {:>12.3} {:>14.0}",
            *batch as f64 / resident,
            resident * 1e3,
            *batch as f64 / from_host
        )?;
    }
    if !failures.is_empty() {
        bail!("CUDA check failed: {}", failures.join("; "));
    }
    Ok(())
}
