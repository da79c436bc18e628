//! `camlime bench`: CamLIME end to end on a bundled model with a per-stage breakdown, on every
//! core and on one (checking that both give identical results), Score-CAM, and every map
//! method's time beside a forward pass. The reference
//! pipeline to compare with, on the same machine: `python3 native/benches/lime_reference.py`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, ensure};
use camlime_core::cam::{self, CamMethod};
use camlime_core::engine::EngineChoice;
use camlime_core::explanation::Timings;
use camlime_core::ndarray::Array4;
use camlime_core::preprocess::DecodeOptions;
use camlime_core::{Classifier, ExplainConfig, Method, Sequential, decode_image};
use clap::Args;
use image::RgbImage;

use crate::models::{Bundle, DeviceArgs, read_image};
use crate::parallel::{Threads, available_threads};

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The image.
    #[arg(long, default_value = "models/samples/chelsea.png")]
    pub image: PathBuf,
    /// A bundled model name or an ONNX path.
    #[arg(long, default_value = "mobilenet_v2")]
    pub model: String,
    /// Perturbed samples.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub samples: u32,
    /// Timed runs on every core (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub runs: u32,
    /// Skip the Score-CAM timing.
    #[arg(long)]
    pub no_scorecam: bool,
    /// Skip the forward vs forward+backward timings of the gradient methods.
    #[arg(long)]
    pub no_gradients: bool,
    /// Only the forward pass of every bundled model on every engine (batch 1, 16 and 64, one
    /// thread and every core), then stop.
    #[arg(long)]
    pub forward: bool,
    /// The engine of the CamLIME and map timings: `auto`, `cnn` (the lowered CNN plan) or
    /// `tract`.
    #[arg(long, default_value = "auto")]
    pub engine: EngineChoice,
    /// Where forward passes run, and the GPU's arithmetic.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Reads one stage's time from a run's timings.
type Stage = fn(&Timings) -> f64;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Run `bench`.
pub fn bench(bundle: &Bundle, args: &BenchArgs, out: &mut dyn Write) -> Result<()> {
    if args.forward {
        return forward_table(bundle, args.runs, out);
    }
    let model = bundle
        .load(&args.model)?
        .on_device(args.device, &args.engine)?;
    writeln!(out, "engine: {}", model.classifier.engine_report())?;
    let image = decode_image(&read_image(&args.image)?, &DecodeOptions::default())?;
    let mut config = ExplainConfig::default();
    config.lime.num_samples = args.samples as usize;
    let threads = available_threads();
    let all = Threads::new(threads);
    let mut runs: Vec<Timings> = Vec::new();
    let mut first = None;
    for _ in 0..args.runs {
        let record = camlime_core::explain(&model.classifier, &image, None, &config, &all)?;
        runs.push(record.timings.clone());
        first.get_or_insert(record);
    }
    let single = camlime_core::explain(&model.classifier, &image, None, &config, &Threads::new(1))?;
    let identical = first.as_ref().is_some_and(|r| r.same_results(&single));
    // The GPU splits work into other batch sizes per thread count, and cuDNN picks its
    // algorithms per batch size: equal to rounding, not bit for bit, so only reported there.
    ensure!(
        identical || model.classifier.on_device(),
        "one thread and {threads} threads gave different results"
    );
    let stage = |f: Stage| median(runs.iter().map(f).collect());
    writeln!(
        out,
        "CamLIME ({} @ {}, {} samples, quickshift) on {}, {} image, {threads} threads, median of {}:",
        config.cam.method,
        model.classifier.default_layers().join("+"),
        args.samples,
        model.name,
        args.image.display(),
        args.runs
    )?;
    let rows: [(&str, Stage); 5] = [
        ("segmentation", |t| t.segmentation_ms),
        ("samples", |t| t.sampling_ms),
        ("cam", |t| t.cam_ms),
        ("surrogate", |t| t.surrogate_ms),
        ("total", |t| t.total_ms),
    ];
    for (name, f) in rows {
        writeln!(out, "  {name:<14} {:>9.1} ms", stage(f))?;
    }
    writeln!(
        out,
        "  per sample     {:>9.2} ms",
        stage(|t| t.sampling_ms) / f64::from(args.samples)
    )?;
    writeln!(
        out,
        "  one thread     {:>9.1} ms total; results identical to {threads} threads: {identical}",
        single.timings.total_ms
    )?;
    if !args.no_scorecam {
        let cam_config = ExplainConfig {
            method: Method::Cam(CamMethod::ScoreCam),
            ..Default::default()
        };
        let start = Instant::now();
        camlime_core::explain(&model.classifier, &image, None, &cam_config, &all)?;
        writeln!(
            out,
            "Score-CAM ({}): {:.2} s",
            model.classifier.default_layers().join("+"),
            start.elapsed().as_secs_f64()
        )?;
    }
    if !args.no_gradients {
        gradient_methods(&model.classifier, &image, args.runs.max(5), out)?;
    }
    Ok(())
}

/// One image, one thread: the forward pass, then each map method (forward + backward for the
/// gradient ones), after one warm-up call that compiles the plans; medians of `runs`.
fn gradient_methods(
    classifier: &Classifier,
    image: &RgbImage,
    runs: u32,
    out: &mut dyn Write,
) -> Result<()> {
    let spec = classifier.spec();
    let base = spec.preprocessing.base_image(image)?;
    let input = spec.preprocessing.tensor(std::slice::from_ref(&base))?;
    let time = |f: &dyn Fn() -> Result<()>| -> Result<f64> {
        f()?;
        let mut times = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            f()?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(times))
    };
    let forward = time(&|| {
        classifier
            .forward(input.view(), &[])
            .map(|_| ())
            .map_err(Into::into)
    })?;
    let logits = classifier.forward(input.view(), &[])?.logits;
    let target = classifier.target_class(&logits.row(0).to_vec(), None)?;
    writeln!(
        out,
        "Maps at {} for class {target}, one image, one thread, median of {runs}:",
        classifier.default_layers().join("+")
    )?;
    writeln!(out, "  {:<20} {forward:>8.1} ms   1.00× forward", "forward")?;
    // Every map method but the ones that re-run the network per channel or window (timed
    // separately or too slow to repeat) and the random baseline.
    let slow = [
        CamMethod::ScoreCam,
        CamMethod::AblationCam,
        CamMethod::Occlusion,
        CamMethod::Random,
    ];
    for method in CamMethod::ALL.into_iter().filter(|m| !slow.contains(m)) {
        let config = ExplainConfig {
            target: Some(target),
            ..Default::default()
        };
        let ms = time(&|| {
            cam::compute_tensor(classifier, input.view(), method, &config, &Sequential)
                .map(|_| ())
                .map_err(Into::into)
        })?;
        writeln!(
            out,
            "  {:<20} {ms:>8.1} ms {:>6.2}× forward",
            method.name(),
            ms / forward
        )?;
    }
    Ok(())
}

/// Milliseconds per image of the forward pass, for every bundled model, engine, batch size (1,
/// 16, 64) and thread count (one, every core): medians of `runs` timed batches after one
/// warm-up that compiles the plans. Compare with `python3 native/benches/onnxruntime_reference.py`
/// on the same machine.
fn forward_table(bundle: &Bundle, runs: u32, out: &mut dyn Write) -> Result<()> {
    let threads = available_threads();
    let counts: Vec<usize> = if threads > 1 {
        vec![1, threads]
    } else {
        vec![1]
    };
    writeln!(
        out,
        "Forward pass, ms per image, median of {runs} (images split over threads, one plan per \
         thread):"
    )?;
    write!(out, "  {:<20} {:<6}", "model", "engine")?;
    for &n in &counts {
        for batch in [1, 16, 64] {
            write!(out, " {:>10}", format!("{n}t b{batch}"))?;
        }
    }
    writeln!(out)?;
    for entry in &bundle.manifest.models {
        for engine in ["cnn", "tract"] {
            write!(out, "  {:<20} {engine:<6}", entry.name)?;
            // An engine that does not cover the model (the lowered plan and a detector's
            // resizes) says why instead of timing it.
            if let Err(e) = bundle
                .load(&entry.name)?
                .classifier
                .with_engine_choice(EngineChoice::Named(engine.into()))
            {
                writeln!(out, " does not run it: {e}")?;
                continue;
            }
            for &n in &counts {
                let pool = Threads::new(n);
                for batch in [1usize, 16, 64] {
                    // tract runs batch-1 plans (its batch-16 plans ran ~4× slower per image);
                    // the lowered plan runs any batch in one plan.
                    let plan_batch = if engine == "tract" {
                        1
                    } else {
                        batch.div_ceil(n)
                    };
                    let classifier = bundle
                        .load(&entry.name)?
                        .classifier
                        .with_engine_choice(EngineChoice::Named(engine.into()))?
                        .with_batch_size(plan_batch)?;
                    let [h, w] = classifier.input_size();
                    let input = Array4::<f32>::from_shape_fn((batch, 3, h, w), |(i, c, y, x)| {
                        ((i + c + y * x) % 7) as f32 * 0.3 - 1.0
                    });
                    classifier.forward_with(&pool, input.view(), &[])?;
                    let mut times = Vec::new();
                    for _ in 0..runs {
                        let start = Instant::now();
                        classifier.forward_with(&pool, input.view(), &[])?;
                        times.push(start.elapsed().as_secs_f64() * 1e3 / batch as f64);
                    }
                    write!(out, " {:>10.2}", median(times))?;
                    out.flush()?;
                }
            }
            writeln!(out)?;
        }
    }
    Ok(())
}
