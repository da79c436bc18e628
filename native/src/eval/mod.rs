//! `camlime eval`: metrics (Quantus's definitions, `camlime_core::metrics`) for several
//! explanation methods over a folder of images. Every (image, method, metric) result is
//! appended to `results.jsonl` as soon as it exists, so an interrupted run continues where it
//! stopped; the tables (Markdown, CSV, JSON) and the mean perturbation curves (SVG, PNG) are
//! rebuilt from that file at the end.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use camlime_core::cam::{CamConfig, CamMethod};
use camlime_core::engine::EngineChoice;
use camlime_core::metrics::{
    Forward, Instance, MethodExplainer, Metric, Outcome, method_map, mprt,
};
use camlime_core::ndarray::{Array2, Array3, Axis};
use camlime_core::preprocess::DecodeLimits;
use camlime_core::render::{Series, line_chart_png, line_chart_svg, paint};
use camlime_core::{Classifier, Method, decode_image, runtime};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod resume;

use crate::explain::ExplainOptions;
use crate::models::{Bundle, DeviceArgs};
use crate::parallel::{Threads, available_threads};
use resume::RunRecord;

/// The paper's metrics with the paper's settings (METHOD.md §5).
pub fn paper_metrics() -> Vec<(String, Value)> {
    use serde_json::json;
    vec![
        (
            "FaithfulnessCorrelation".into(),
            json!({"nr_runs": 100, "subset_size": 224, "perturb_baseline": "black"}),
        ),
        (
            "FaithfulnessEstimate".into(),
            json!({"features_in_step": 224, "perturb_baseline": "black"}),
        ),
        (
            "MonotonicityCorrelation".into(),
            json!({"features_in_step": 3136, "nr_samples": 10}),
        ),
        ("IROF".into(), json!({})),
        (
            "RegionPerturbation".into(),
            json!({"patch_size": 14, "perturb_baseline": "uniform", "order": "morf"}),
        ),
        ("Sparseness".into(), json!({})),
        ("Complexity".into(), json!({})),
        ("EffectiveComplexity".into(), json!({"eps": 1e-5})),
    ]
}

/// The paper's methods: LIME against CamLIME, and the CAM methods.
pub const PAPER_METHODS: &str = "lime,camlime,gradcam,gradcam++,layercam,eigencam";

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
    pub methods: Vec<String>,
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
    /// The explanation methods' parameters.
    #[command(flatten)]
    pub options: ExplainOptions,
}

/// One image's score of one method and metric (a line of `results.jsonl`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Row {
    /// The image's file name.
    pub image: String,
    /// The method's name.
    pub method: String,
    /// The metric's name.
    pub metric: String,
    /// Score, curve and sums.
    #[serde(flatten)]
    pub outcome: Option<Outcome>,
    /// Why there is no score.
    pub error: Option<String>,
    /// Seconds the metric took.
    pub seconds: f64,
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

/// The metrics asked for (names, `paper` or `all`: every metric, localisation ones only with
/// `have_masks`), with their parameters, checked.
fn chosen_metrics(
    names: &[String],
    overrides: &BTreeMap<String, Value>,
    have_masks: bool,
) -> Result<Vec<(String, Value)>> {
    let mut chosen: Vec<(String, Value)> = Vec::new();
    for name in names {
        match name.trim() {
            "paper" => chosen.extend(paper_metrics()),
            "all" => chosen.extend(
                Metric::NAMES
                    .iter()
                    .filter(|n| {
                        have_masks || !Metric::parse(n, &Value::Null).is_ok_and(|m| m.needs().mask)
                    })
                    .map(|n| ((*n).to_owned(), Value::Object(Default::default()))),
            ),
            other => {
                let metric = Metric::parse(other, &Value::Null)?;
                chosen.push((metric.name().to_owned(), Value::Object(Default::default())));
            }
        }
    }
    ensure!(!chosen.is_empty(), "no metric chosen");
    let mut seen = HashSet::new();
    chosen.retain(|(name, _)| seen.insert(name.clone()));
    for (name, params) in &mut chosen {
        if let Some(extra) = overrides.get(name.as_str()) {
            let (Value::Object(base), Value::Object(extra)) = (&mut *params, extra) else {
                bail!("parameters of {name} must be a JSON object");
            };
            base.extend(extra.clone());
        }
        Metric::parse(name, params)?;
    }
    for key in overrides.keys() {
        ensure!(
            chosen.iter().any(|(name, _)| name == key),
            "the metric parameters name {key}, which is not among the chosen metrics"
        );
    }
    Ok(chosen)
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

/// One image ready for the metrics.
pub struct Prepared {
    image: image::RgbImage,
    input: Array3<f32>,
    target: usize,
    mask: Option<Array2<bool>>,
}

/// Decode an image (and its ground-truth mask: non-zero = relevant, at the image's size,
/// cropped and resized as the image is), make the model input and choose the target class.
pub fn prepare(
    classifier: &Classifier,
    image: &[u8],
    mask: Option<&[u8]>,
    options: &ExplainOptions,
) -> Result<Prepared> {
    let limits = DecodeLimits {
        max_pixels: options.max_pixels,
    };
    let image = decode_image(image, &limits)?;
    let preprocessing = &classifier.spec().preprocessing;
    let base = preprocessing.base_image(&image)?;
    let input = preprocessing
        .tensor(std::slice::from_ref(&base))?
        .index_axis_move(Axis(0), 0);
    let logits = classifier
        .forward(input.view().insert_axis(Axis(0)), &[])?
        .logits
        .row(0)
        .to_vec();
    let target = classifier.target_class(&logits, options.target)?;
    let mask = match mask {
        None => None,
        Some(bytes) => {
            let mask = decode_image(bytes, &limits).context("in the mask")?;
            ensure!(
                mask.dimensions() == image.dimensions(),
                "the mask is {:?}, its image {:?}",
                mask.dimensions(),
                image.dimensions()
            );
            let base_mask = preprocessing.base_image(&mask)?;
            let (w, h) = base_mask.dimensions();
            Some(Array2::from_shape_fn((h as usize, w as usize), |(r, c)| {
                base_mask
                    .get_pixel(c as u32, r as u32)
                    .0
                    .iter()
                    .any(|&v| v >= 128)
            }))
        }
    };
    Ok(Prepared {
        image,
        input,
        target,
        mask,
    })
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
fn prepare_file(
    classifier: &Classifier,
    path: &Path,
    masks: Option<&Path>,
    options: &ExplainOptions,
) -> Result<Prepared> {
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
    prepare(classifier, &bytes, mask.as_deref(), options)
        .with_context(|| format!("in {}", path.display()))
}

/// The attribution map of `method` for an image.
fn attribution(
    classifier: &Classifier,
    prepared: &Prepared,
    method: Method,
    options: &ExplainOptions,
    threads: &Threads,
) -> Result<Array2<f32>> {
    let mut config = options.config(method)?;
    config.target = Some(prepared.target);
    match method {
        Method::Cam(cam) => method_map(
            classifier,
            prepared.input.view(),
            prepared.target,
            &cam_config(cam, &config),
            threads,
        )
        .map_err(Into::into),
        Method::Lime | Method::CamLime => {
            let record =
                camlime_core::explain(classifier, &prepared.image, None, &config, threads)?;
            let segments = record
                .segments
                .as_ref()
                .context("a LIME record without segments")?
                .segmentation()?;
            let explanation = record
                .main_explanation()
                .context("no explanation in the record")?;
            let map = paint(&segments, &explanation.weights(segments.count()))?;
            Array2::from_shape_vec((map.height(), map.width()), map.values().to_vec())
                .map_err(Into::into)
        }
    }
}

fn cam_config(method: CamMethod, config: &camlime_core::ExplainConfig) -> CamConfig {
    CamConfig {
        method,
        layers: config.layers.clone(),
        target: config.target,
        ablation: config.ablation,
        seed: config.seed,
        eigen_smooth: config.eigen_smooth,
        aug_smooth: config.aug_smooth,
        feature_resolution: false,
        attribution: config.attribution.clone(),
        ..CamConfig::default()
    }
}

/// What every score of a run shares.
struct Scoring<'a> {
    classifier: &'a Classifier,
    options: &'a ExplainOptions,
    threads: &'a Threads,
    seed: u64,
}

/// Score one metric; the explainer exists only for CAMs and input attributions.
fn score(
    metric: &Metric,
    scoring: &Scoring,
    prepared: &Prepared,
    map: &Array2<f32>,
    method: Method,
) -> Result<Outcome> {
    let Scoring {
        classifier,
        options,
        threads,
        seed,
    } = *scoring;
    let instance = Instance {
        input: prepared.input.view(),
        target: prepared.target,
        attribution: map.view(),
        mask: prepared.mask.as_ref().map(|m| m.view()),
    };
    let model = Forward {
        classifier,
        runtime: threads,
    };
    let cam = match method {
        Method::Cam(cam) => Some(cam_config(cam, &options.config(method)?)),
        _ => None,
    };
    if metric.needs().explainer && cam.is_none() {
        bail!(
            "{} re-explains perturbed model inputs, which {} (an explanation of the image) cannot",
            metric.name(),
            method.name()
        );
    }
    if let Metric::Mprt(params) = metric {
        let config = cam.context("MPRT needs a CAM or input attribution")?;
        let layers = classifier.parameter_layers();
        return Ok(mprt(params, &instance, &layers, &mut |set| {
            let edited = if set.is_empty() {
                None
            } else {
                Some(classifier.with_randomised_layers(set, params.seed)?)
            };
            method_map(
                edited.as_ref().unwrap_or(classifier),
                prepared.input.view(),
                prepared.target,
                &config,
                threads,
            )
        })?);
    }
    let explainer = cam.map(|config| MethodExplainer {
        classifier,
        config,
        runtime: threads,
    });
    let explainer = explainer
        .as_ref()
        .map(|e| e as &dyn camlime_core::metrics::Explainer);
    Ok(metric.evaluate(&instance, &model, explainer, seed)?)
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

/// (image, method, metric): what one row of results answers.
type Key = (String, String, String);

/// A checked evaluation: the methods, the metrics with their parameters, the explanation
/// options and the metrics' seed. The command line and the server's evaluation jobs run it.
pub struct Plan {
    methods: Vec<Method>,
    metrics: Vec<(String, Value)>,
    parsed: Vec<Metric>,
    options: ExplainOptions,
    seed: u64,
}

impl Plan {
    /// Check the methods (each with `options`) and the metrics (names, `paper` or `all`, with
    /// `overrides` over their defaults); `all` takes localisation metrics only with `have_masks`.
    /// Whether masks are there for a named localisation metric is the caller's check
    /// ([`Plan::mask_metric`]), since only it knows where masks come from.
    pub fn new(
        methods: &[String],
        metrics: &[String],
        overrides: &BTreeMap<String, Value>,
        have_masks: bool,
        options: ExplainOptions,
        seed: u64,
    ) -> Result<Self> {
        let methods: Vec<Method> = methods
            .iter()
            .map(|m| Method::from_name(m.trim()))
            .collect::<Result<_, _>>()?;
        ensure!(!methods.is_empty(), "no explanation method chosen");
        let mut unique = HashSet::new();
        ensure!(
            methods.iter().all(|m| unique.insert(m.name())),
            "a method is named twice"
        );
        for method in &methods {
            options.config(*method)?;
        }
        let metrics = chosen_metrics(metrics, overrides, have_masks)?;
        let parsed = metrics
            .iter()
            .map(|(name, params)| Metric::parse(name, params))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            methods,
            metrics,
            parsed,
            options,
            seed,
        })
    }

    /// The explanation methods.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// The metrics with their parameters (defaults and overrides).
    pub fn metrics(&self) -> &[(String, Value)] {
        &self.metrics
    }

    /// The explanation methods' parameters.
    pub fn options(&self) -> &ExplainOptions {
        &self.options
    }

    /// The first metric that needs ground-truth masks, if any.
    pub fn mask_metric(&self) -> Option<&'static str> {
        self.parsed
            .iter()
            .find(|m| m.needs().mask)
            .map(Metric::name)
    }

    /// The (method, metric) pairs of an image that `done` lacks.
    fn todo(&self, image: &str, done: &HashSet<Key>) -> Vec<(Method, &Metric)> {
        self.methods
            .iter()
            .flat_map(|m| self.parsed.iter().map(move |metric| (*m, metric)))
            .filter(|(m, metric)| {
                !done.contains(&(
                    image.to_owned(),
                    m.name().to_owned(),
                    metric.name().to_owned(),
                ))
            })
            .collect()
    }

    /// Rows still to compute for `images`.
    pub fn pending(&self, images: &[String], done: &HashSet<Key>) -> usize {
        images.iter().map(|i| self.todo(i, done).len()).sum()
    }

    /// Compute an image's rows that `done` lacks, method by method (one attribution map each),
    /// handing each row to `on_row` as soon as it exists; `on_step` hears what starts next.
    /// A metric that fails is a row with its error; a method that fails is an error.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate_image(
        &self,
        classifier: &Classifier,
        image: &str,
        prepared: &Prepared,
        done: &HashSet<Key>,
        threads: &Threads,
        on_step: &mut dyn FnMut(&str),
        on_row: &mut dyn FnMut(Row) -> Result<()>,
    ) -> Result<()> {
        let todo = self.todo(image, done);
        let scoring = Scoring {
            classifier,
            options: &self.options,
            threads,
            seed: self.seed,
        };
        for method in &self.methods {
            let metrics: Vec<&Metric> = todo
                .iter()
                .filter(|(m, _)| m == method)
                .map(|(_, metric)| *metric)
                .collect();
            if metrics.is_empty() {
                continue;
            }
            on_step(&format!("{image} · {}", method.name()));
            let map = attribution(classifier, prepared, *method, &self.options, threads)
                .with_context(|| format!("{} on {image}", method.name()))?;
            for metric in metrics {
                on_step(&format!("{image} · {} · {}", method.name(), metric.name()));
                let clock = Instant::now();
                let (outcome, error) = match score(metric, &scoring, prepared, &map, *method) {
                    Ok(outcome) => (Some(outcome), None),
                    Err(e) => {
                        runtime::check_cancelled(threads)?;
                        (None, Some(format!("{e:#}")))
                    }
                };
                on_row(Row {
                    image: image.to_owned(),
                    method: method.name().to_owned(),
                    metric: metric.name().to_owned(),
                    outcome,
                    error,
                    seconds: clock.elapsed().as_secs_f64(),
                })?;
            }
        }
        Ok(())
    }

    /// The tables and mean curves of `rows` (the latest row of each image, method and metric).
    pub fn report(&self, rows: &[Row], images: &[String]) -> Report {
        let summary = summarise(rows, images, &self.methods, &self.parsed);
        let markdown = markdown(&summary, &self.methods, &self.parsed);
        let curves = self
            .parsed
            .iter()
            .filter_map(|metric| {
                let series: Vec<Curve> = self
                    .methods
                    .iter()
                    .filter_map(|method| {
                        mean_curve(rows, images, method.name(), metric.name()).map(|points| Curve {
                            method: method.name().to_owned(),
                            title: method.title().to_owned(),
                            points,
                        })
                    })
                    .collect();
                (!series.is_empty()).then(|| (metric.name().to_owned(), series))
            })
            .collect();
        Report {
            summary: summary
                .into_iter()
                .map(|((method, metric), cell)| SummaryCell {
                    higher_is_better: self
                        .parsed
                        .iter()
                        .find(|m| m.name() == metric)
                        .and_then(Metric::higher_is_better),
                    method,
                    metric,
                    cell,
                })
                .collect(),
            markdown,
            curves,
        }
    }
}

/// The results of an evaluation.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// One cell per method and metric.
    pub summary: Vec<SummaryCell>,
    /// The table as Markdown (methods × metrics, mean ± std, ↑/↓), with the reasons for n/a.
    pub markdown: String,
    /// Mean perturbation curves by metric, one per method.
    pub curves: BTreeMap<String, Vec<Curve>>,
}

/// One method × metric cell of the summary.
#[derive(Debug, Serialize, Deserialize)]
pub struct SummaryCell {
    /// The method's name.
    pub method: String,
    /// The metric's name.
    pub metric: String,
    /// Whether higher scores are better (`None`: neither).
    pub higher_is_better: Option<bool>,
    /// Mean, standard deviation and counts.
    #[serde(flatten)]
    pub cell: Cell,
}

/// A method's mean curve over images, on [0, 1] of the perturbation sequence.
#[derive(Debug, Serialize, Deserialize)]
pub struct Curve {
    /// The method's name.
    pub method: String,
    /// The method as tables show it.
    pub title: String,
    /// (share of the sequence, mean model output).
    pub points: Vec<(f64, f64)>,
}

/// `camlime eval`.
pub fn eval(bundle: &Bundle, args: &EvalArgs, out: &mut dyn Write) -> Result<()> {
    let overrides = read_overrides(args.metric_params.as_deref())?;
    let plan = Plan::new(
        &args.methods,
        &args.metrics,
        &overrides,
        args.masks.is_some(),
        args.options.clone(),
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
    let threads = Threads::new(args.options.threads.unwrap_or_else(available_threads));
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
        let prepared = prepare_file(classifier, path, args.masks.as_deref(), plan.options())?;
        plan.evaluate_image(
            classifier,
            name,
            &prepared,
            &done,
            &threads,
            &mut |step| bar.set_message(step.to_owned()),
            &mut |row| {
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
        plan.methods.len(),
        plan.parsed.len(),
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
    for method in &plan.methods {
        let config = plan.options.config(*method)?;
        record.setting(&format!("explanation.{}", method.name()), &config)?;
    }
    for metric in &plan.parsed {
        record.setting(&format!("metric.{}", metric.name()), metric)?;
    }
    record.setting("metric_seed", &args.metric_seed)?;
    for (path, name) in files.iter().zip(names) {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        record.image(name, &bytes);
        if let Some(dir) = &args.masks {
            let mask = mask_file(dir, path);
            // A missing mask is `prepare_file`'s error, where the metric needs it.
            if let (Ok(bytes), Some(mask_name)) = (std::fs::read(&mask), mask.file_name()) {
                record.mask(&mask_name.to_string_lossy(), &bytes);
            }
        }
    }
    Ok(record)
}

/// Mean and standard deviation of one method × metric over images.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Cell {
    /// Mean of the finite scores.
    pub mean: f64,
    /// Their (population) standard deviation.
    pub std: f64,
    /// Finite scores.
    pub n: usize,
    /// NaN scores (e.g. a correlation of constant values).
    pub nan: usize,
    /// Why images had no score (a method the metric cannot re-run, say).
    pub errors: Vec<String>,
}

type Summary = BTreeMap<(String, String), Cell>;

fn summarise(rows: &[Row], images: &[String], methods: &[Method], metrics: &[Metric]) -> Summary {
    let mut summary = Summary::new();
    for method in methods {
        for metric in metrics {
            let mut outcomes: Vec<Outcome> = Vec::new();
            let mut cell = Cell::default();
            for image in images {
                let row = rows.iter().rev().find(|r| {
                    r.image == *image && r.method == method.name() && r.metric == metric.name()
                });
                match row {
                    Some(Row {
                        outcome: Some(o), ..
                    }) => outcomes.push(o.clone()),
                    Some(Row { error: Some(e), .. }) if !cell.errors.contains(e) => {
                        cell.errors.push(e.clone());
                    }
                    _ => {}
                }
            }
            metric.finish(&mut outcomes);
            let scores: Vec<f64> = outcomes.iter().map(|o| o.score).collect();
            let finite: Vec<f64> = scores.iter().copied().filter(|s| s.is_finite()).collect();
            cell.n = finite.len();
            cell.nan = scores.len() - finite.len();
            if !finite.is_empty() {
                cell.mean = finite.iter().sum::<f64>() / finite.len() as f64;
                cell.std = (finite.iter().map(|s| (s - cell.mean).powi(2)).sum::<f64>()
                    / finite.len() as f64)
                    .sqrt();
            }
            summary.insert((method.name().to_owned(), metric.name().to_owned()), cell);
        }
    }
    summary
}

fn cell_text(cell: &Cell) -> String {
    if cell.n == 0 {
        return if cell.errors.is_empty() {
            "NaN".into()
        } else {
            "n/a".into()
        };
    }
    let mut text = format!("{:.4} ± {:.4}", cell.mean, cell.std);
    if cell.nan > 0 {
        text.push_str(&format!(" ({} NaN)", cell.nan));
    }
    text
}

fn markdown(summary: &Summary, methods: &[Method], metrics: &[Metric]) -> String {
    let mut text = String::from("| method |");
    for metric in metrics {
        let arrow = match metric.higher_is_better() {
            Some(true) => " ↑",
            Some(false) => " ↓",
            None => "",
        };
        text.push_str(&format!(" {}{arrow} |", metric.name()));
    }
    text.push_str("\n|---|");
    text.push_str(&"---|".repeat(metrics.len()));
    text.push('\n');
    for method in methods {
        text.push_str(&format!("| {} |", method.title()));
        for metric in metrics {
            let cell = &summary[&(method.name().to_owned(), metric.name().to_owned())];
            text.push_str(&format!(" {} |", cell_text(cell)));
        }
        text.push('\n');
    }
    let notes: Vec<String> = summary
        .iter()
        .flat_map(|((method, metric), cell)| {
            cell.errors
                .iter()
                .map(move |e| format!("- {method} × {metric}: {e}"))
        })
        .collect();
    if !notes.is_empty() {
        text.push_str("\nNot computed:\n");
        text.push_str(&notes.join("\n"));
        text.push('\n');
    }
    text
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

/// The mean curve of a method × metric over images, each curve placed on [0, 1] and sampled
/// at 101 points by linear interpolation (curves may differ in length: IROF's segments).
fn mean_curve(
    rows: &[Row],
    images: &[String],
    method: &str,
    metric: &str,
) -> Option<Vec<(f64, f64)>> {
    const POINTS: usize = 101;
    let curves: Vec<&Vec<f64>> = images
        .iter()
        .filter_map(|image| {
            rows.iter()
                .rev()
                .find(|r| r.image == *image && r.method == method && r.metric == metric)
        })
        .filter_map(|r| r.outcome.as_ref())
        .map(|o| &o.curve)
        .filter(|c| c.len() >= 2 && c.iter().all(|v| v.is_finite()))
        .collect();
    if curves.is_empty()
        || !matches!(
            metric,
            "PixelFlipping"
                | "RegionPerturbation"
                | "Selectivity"
                | "IROF"
                | "ROAD"
                | "Deletion"
                | "Insertion"
                | "MonotonicityArya"
                | "Infidelity"
        )
    {
        return None;
    }
    let sample = |curve: &[f64], t: f64| {
        let position = t * (curve.len() - 1) as f64;
        let i = (position.floor() as usize).min(curve.len() - 2);
        let frac = position - i as f64;
        curve[i] * (1.0 - frac) + curve[i + 1] * frac
    };
    Some(
        (0..POINTS)
            .map(|k| {
                let t = k as f64 / (POINTS - 1) as f64;
                let mean = curves.iter().map(|c| sample(c, t)).sum::<f64>() / curves.len() as f64;
                (t, mean)
            })
            .collect(),
    )
}
