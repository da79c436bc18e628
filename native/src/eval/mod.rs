//! `camlime eval`: the core's evaluation ([`camlime_core::evaluation`]: metrics of Quantus for
//! several explanation methods) over a folder of images. Every (image, method, metric) result is
//! appended to `results.jsonl` as soon as it exists, so an interrupted run continues where it
//! stopped (`resume.rs` refuses a folder whose settings differ); the tables (Markdown, CSV,
//! JSON) and the mean perturbation curves (SVG, PNG) are rebuilt from that file at the end.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use camlime_core::engine::EngineChoice;
use camlime_core::evaluation::{Image, Key, PAPER_METHODS, Plan, Report, Row, SummaryCell};
use camlime_core::preprocess::DecodeOptions;
use camlime_core::render::{Series, line_chart_png, line_chart_svg};
use camlime_core::{Classifier, ExplainConfig, Method};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

mod resume;

use crate::explain::RunFlags;
use crate::flags::ConfigFlags;
use crate::models::{Bundle, DeviceArgs};
use crate::parallel::{Threads, available_threads};
use resume::RunRecord;

/// Arguments of `eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Folder of images (PNG, JPEG, WebP, BMP, GIF, TIFF), evaluated in name order.
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Where forward passes run, and the GPU's arithmetic.
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Explanation methods, comma-separated: camlime, lime or any CAM / input attribution.
    #[arg(long, value_delimiter = ',', default_value = PAPER_METHODS)]
    pub methods: Vec<Method>,
    /// Metrics, comma-separated (Quantus's names), `paper` (the paper's eight with its
    /// settings) or `all` (every metric the run can compute).
    #[arg(long, value_delimiter = ',', default_value = "paper")]
    pub metrics: Vec<String>,
    /// JSON object of metric parameters over the defaults: {"PixelFlipping": {"features_in_step": 224}}.
    #[arg(long, value_name = "FILE")]
    pub metric_params: Option<PathBuf>,
    /// Folder of ground-truth masks for localisation metrics: `<image stem>.png`, non-zero =
    /// relevant, at the image's size (cropped and resized as the image is).
    #[arg(long, value_name = "DIR")]
    pub masks: Option<PathBuf>,
    /// A bundled model name or a path to an ONNX classifier.
    #[arg(long, default_value = "mobilenet_v2")]
    pub model: String,
    /// Output folder (results.jsonl, summary.md/.csv/.json, curves/); an existing one is resumed.
    #[arg(long, default_value = "camlime-eval", value_name = "DIR")]
    pub out: PathBuf,
    /// Seed of the metrics' random draws (each image and metric starts from it).
    #[arg(long, default_value_t = 0)]
    pub metric_seed: u64,
    /// Evaluate only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// The explanation methods' settings.
    #[command(flatten)]
    pub config: ConfigFlags,
    /// Threads and the decode limit.
    #[command(flatten)]
    pub run: RunFlags,
}

/// A `--metric-params` file: metric name → parameters over the defaults.
fn read_overrides(path: Option<&Path>) -> Result<BTreeMap<String, Value>> {
    let Some(path) = path else {
        return Ok(BTreeMap::new());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} must be a JSON object of metric parameters",
            path.display()
        )
    })
}

/// Image files of a folder in name order.
fn image_files(dir: &Path, limit: Option<usize>) -> Result<Vec<PathBuf>> {
    const EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"];
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the image folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if let Some(n) = limit {
        files.truncate(n);
    }
    ensure!(!files.is_empty(), "no images in {}", dir.display());
    Ok(files)
}

/// The mask of an image file: `<stem>.png` in the masks folder.
fn mask_file(masks: &Path, image: &Path) -> PathBuf {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    masks.join(format!("{stem}.png"))
}

/// Read and prepare one image file of the folder, with its mask `<stem>.png` from `masks`.
fn read_image_file(
    classifier: &Classifier,
    path: &Path,
    masks: Option<&Path>,
    config: &ExplainConfig,
    limits: &DecodeOptions,
) -> Result<Image> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mask = match masks {
        None => None,
        Some(dir) => {
            let file = mask_file(dir, path);
            Some(std::fs::read(&file).with_context(|| {
                format!(
                    "no mask for {}: cannot read {}",
                    path.display(),
                    file.display()
                )
            })?)
        }
    };
    Image::read(classifier, &bytes, mask.as_deref(), config.target, limits)
        .with_context(|| format!("in {}", path.display()))
}

/// The rows of a results file, and whether its last line was cut short (no newline).
fn read_rows(path: &Path) -> Result<(Vec<Row>, bool)> {
    if !path.exists() {
        return Ok((Vec::new(), false));
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // A line cut short by an interruption is dropped and redone.
        match serde_json::from_str::<Row>(line) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!("camlime: {}: line {} skipped ({e})", path.display(), i + 1),
        }
    }
    Ok((rows, !text.is_empty() && !text.ends_with('\n')))
}

/// `camlime eval`.
pub fn eval(bundle: &Bundle, args: &EvalArgs, out: &mut dyn Write) -> Result<()> {
    let overrides = read_overrides(args.metric_params.as_deref())?;
    let plan = Plan::new(
        &args.methods,
        &args.metrics,
        &overrides,
        args.masks.is_some(),
        args.config.config(Method::CamLime)?,
        args.metric_seed,
    )?;
    if let Some(name) = plan.mask_metric() {
        ensure!(
            args.masks.is_some(),
            "{name} needs ground-truth masks: pass --masks DIR"
        );
    }
    let files = image_files(&args.images, args.limit)?;
    let loaded = bundle
        .load(&args.model)?
        .on_device(args.device, &EngineChoice::Auto)?;
    let classifier = &loaded.classifier;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        })
        .collect();
    run_record(&loaded.name, classifier, &plan, &files, &names, args)?.start(&args.out)?;
    let results_path = args.out.join("results.jsonl");
    let (mut rows, cut) = read_rows(&results_path)?;
    let done: HashSet<Key> = rows
        .iter()
        .map(|r| (r.image.clone(), r.method.clone(), r.metric.clone()))
        .collect();
    let pending = plan.pending(&names, &done);
    let threads = Threads::new(args.run.threads.unwrap_or_else(available_threads));
    let bar = ProgressBar::new(pending as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>40} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&results_path)
        .with_context(|| format!("cannot write {}", results_path.display()))?;
    // An interrupted write leaves a line without its newline: end it before appending.
    if cut {
        writeln!(log)?;
    }
    let started = Instant::now();
    for (path, name) in files.iter().zip(&names) {
        if plan.todo(name, &done).is_empty() {
            continue;
        }
        let limits = args.run.decoding();
        let image = read_image_file(
            classifier,
            path,
            args.masks.as_deref(),
            plan.config(),
            &limits,
        )?;
        plan.evaluate_image(
            classifier,
            name,
            &image,
            &done,
            &threads,
            &mut |step| bar.set_message(step.to_owned()),
            &mut |row| -> Result<()> {
                writeln!(log, "{}", serde_json::to_string(&row)?)?;
                log.flush()?;
                rows.push(row);
                bar.inc(1);
                Ok(())
            },
        )?;
    }
    bar.finish_and_clear();
    let report = plan.report(&rows, &names);
    write_outputs(&args.out, &report)?;
    writeln!(
        out,
        "{} images × {} methods × {} metrics in {:.1} s ({} computed now) → {}",
        names.len(),
        plan.methods().len(),
        plan.parsed_metrics().len(),
        started.elapsed().as_secs_f64(),
        pending,
        args.out.display()
    )?;
    write!(out, "{}", report.markdown)?;
    Ok(())
}

/// Every setting that decides this run's scores, and the digests of its images and masks. The
/// files are read here although the loop reads them again: an image whose rows are all done is
/// never prepared, yet a changed one must still be refused before anything is computed.
fn run_record(
    model: &str,
    classifier: &Classifier,
    plan: &Plan,
    files: &[PathBuf],
    names: &[String],
    args: &EvalArgs,
) -> Result<RunRecord> {
    let mut record = RunRecord::default();
    record.setting("model.name", &model)?;
    record.setting("model.sha256", &classifier.sha256())?;
    record.setting("model.preprocessing", &classifier.spec().preprocessing)?;
    for method in plan.methods() {
        record.setting(
            &format!("explanation.{}", method.name()),
            &plan.method_config(*method),
        )?;
    }
    for metric in plan.parsed_metrics() {
        record.setting(&format!("metric.{}", metric.name()), metric)?;
    }
    record.setting("metric_seed", &args.metric_seed)?;
    for (path, name) in files.iter().zip(names) {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        record.image(name, &bytes);
        if let Some(dir) = &args.masks {
            let mask = mask_file(dir, path);
            // A missing mask is `read_image_file`'s error, where the metric needs it.
            if let (Ok(bytes), Some(mask_name)) = (std::fs::read(&mask), mask.file_name()) {
                record.mask(&mask_name.to_string_lossy(), &bytes);
            }
        }
    }
    Ok(record)
}

fn write_outputs(dir: &Path, report: &Report) -> Result<()> {
    std::fs::write(dir.join("summary.md"), &report.markdown)?;
    let mut csv = String::from("method,metric,mean,std,n,nan\n");
    for SummaryCell {
        method,
        metric,
        cell,
        ..
    } in &report.summary
    {
        csv.push_str(&format!(
            "{method},{metric},{},{},{},{}\n",
            cell.mean, cell.std, cell.n, cell.nan
        ));
    }
    std::fs::write(dir.join("summary.csv"), csv)?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&report.summary)? + "\n",
    )?;
    let folder = dir.join("curves");
    for (metric, curves) in &report.curves {
        std::fs::create_dir_all(&folder)?;
        let series: Vec<Series> = curves
            .iter()
            .map(|c| Series {
                name: c.title.clone(),
                points: c.points.clone(),
            })
            .collect();
        let title = format!("{metric} (mean over images)");
        let labels = (
            title.as_str(),
            "share of the perturbation sequence",
            "model output",
        );
        std::fs::write(
            folder.join(format!("{metric}.svg")),
            line_chart_svg(&series, labels.0, labels.1, labels.2)?,
        )?;
        line_chart_png(&series, labels, 900, 480)?
            .save(folder.join(format!("{metric}.png")))
            .context("cannot write a curve plot")?;
    }
    Ok(())
}
