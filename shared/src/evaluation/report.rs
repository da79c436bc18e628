//! An evaluation's results: its rows, the summary table (mean ± std per method and metric, in
//! Markdown too) and the mean perturbation curves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Method;
use crate::metrics::{Metric, Outcome};

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

/// The tables and mean curves of `rows` (the latest row of each image, method and metric).
pub(super) fn report(
    rows: &[Row],
    images: &[String],
    methods: &[Method],
    metrics: &[Metric],
) -> Report {
    let summary = summarise(rows, images, methods, metrics);
    let markdown = markdown(&summary, methods, metrics);
    let curves = metrics
        .iter()
        .filter(|metric| metric.has_curve())
        .filter_map(|metric| {
            let series: Vec<Curve> = methods
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
                higher_is_better: metrics
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

/// A finished evaluation: what ran, and its report and rows (the server's evaluation jobs'
/// `result`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Evaluation {
    /// The model's name.
    pub model: String,
    /// sha256 of its ONNX file.
    pub model_sha256: String,
    /// The images' names, in the order sent.
    pub images: Vec<String>,
    /// The methods.
    pub methods: Vec<String>,
    /// The metrics with their parameters.
    pub metrics: Vec<(String, serde_json::Value)>,
    /// Seed of the metrics' random draws.
    pub metric_seed: u64,
    /// Tables and mean curves.
    #[serde(flatten)]
    pub report: Report,
    /// Every image's score of every method and metric.
    pub rows: Vec<Row>,
    /// Seconds the evaluation computed.
    pub seconds: f64,
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

/// The mean curve of a method × metric (one with perturbation curves) over images, each curve
/// placed on [0, 1] and sampled at 101 points by linear interpolation (curves may differ in
/// length: IROF's segments).
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
    if curves.is_empty() {
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
