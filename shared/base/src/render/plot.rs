//! Line charts drawn with plotters as SVG (text left to the viewer's fonts) or PNG (text in the
//! bundled DejaVu Sans): the paper's weight–feature plot (each method's surrogate coefficient
//! per segment id, e.g. LIME against CamLIME) and the metrics' perturbation curves.

#[cfg(not(target_arch = "wasm32"))]
use std::sync::Once;

use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
#[cfg(not(target_arch = "wasm32"))]
use plotters::style::FontStyle;

use crate::{Error, Result};

/// One method's coefficients, indexed by segment id.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightCurve {
    /// Legend entry.
    pub name: String,
    /// Coefficient of every segment.
    pub weights: Vec<f64>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn render_error(e: impl std::fmt::Display) -> Error {
    Error::Parameter(format!("cannot draw the plot: {e}"))
}

fn check(curves: &[WeightCurve]) -> Result<usize> {
    let n = curves.first().map_or(0, |c| c.weights.len());
    if n == 0 || curves.iter().any(|c| c.weights.len() != n) {
        return Err(Error::Parameter(
            "the weight plot needs curves of one non-zero length".into(),
        ));
    }
    if curves
        .iter()
        .flat_map(|c| &c.weights)
        .any(|w| !w.is_finite())
    {
        return Err(Error::Parameter(
            "the weight plot needs finite weights".into(),
        ));
    }
    Ok(n)
}

/// One line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// (x, y) points in order.
    pub points: Vec<(f64, f64)>,
}

/// What a chart shows around its lines.
struct Frame<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    /// Circles on the points and a line at y = 0 (the weight plot).
    markers: bool,
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    series: &[Series],
    frame: &Frame,
) -> Result<()> {
    // Natively, plotters looks fonts up by family in its own table (even to lay out SVG text):
    // give it the bundled DejaVu Sans. In WebAssembly it measures text with the page's canvas.
    #[cfg(not(target_arch = "wasm32"))]
    FONT.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
    root.fill(&WHITE).map_err(render_error)?;
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let fold = |(lo, hi): (f64, f64), v: f64| (lo.min(v), hi.max(v));
    let (x_lo, x_hi) = points()
        .map(|p| p.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), fold);
    let start = if frame.markers {
        (0.0, 0.0)
    } else {
        (f64::INFINITY, f64::NEG_INFINITY)
    };
    let (lo, hi) = points().map(|p| p.1).fold(start, fold);
    let margin = ((hi - lo) * 0.08).max(1e-6);
    let x_margin = if frame.markers { 0.5 } else { 0.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption(frame.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (x_lo - x_margin)..(x_hi + x_margin).max(x_lo + 1e-9),
            (lo - margin)..(hi + margin),
        )
        .map_err(render_error)?;
    chart
        .configure_mesh()
        .x_desc(frame.x_desc)
        .y_desc(frame.y_desc)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(render_error)?;
    if frame.markers {
        chart
            .draw_series(LineSeries::new(
                [(x_lo - x_margin, 0.0), (x_hi + x_margin, 0.0)],
                RGBColor(120, 120, 120),
            ))
            .map_err(render_error)?;
    }
    for (k, line) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))
            .map_err(render_error)?
            .label(line.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        if frame.markers {
            chart
                .draw_series(
                    line.points
                        .iter()
                        .map(|&p| Circle::new(p, 3, color.filled())),
                )
                .map_err(render_error)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(render_error)?;
    root.present().map_err(render_error)
}

fn weight_series(curves: &[WeightCurve]) -> Vec<Series> {
    curves
        .iter()
        .map(|c| Series {
            name: c.name.clone(),
            points: c
                .weights
                .iter()
                .enumerate()
                .map(|(i, &w)| (i as f64, w))
                .collect(),
        })
        .collect()
}

fn weight_frame(title: &str) -> Frame<'_> {
    Frame {
        title,
        x_desc: "segment id",
        y_desc: "weight",
        markers: true,
    }
}

fn check_series(series: &[Series]) -> Result<()> {
    if series.is_empty() || series.iter().any(|s| s.points.is_empty()) {
        return Err(Error::Parameter("a chart needs non-empty lines".into()));
    }
    if series
        .iter()
        .flat_map(|s| &s.points)
        .any(|(x, y)| !x.is_finite() || !y.is_finite())
    {
        return Err(Error::Parameter("a chart needs finite points".into()));
    }
    Ok(())
}

/// A line chart (e.g. metrics' perturbation curves) as an SVG document.
pub fn line_chart_svg(
    series: &[Series],
    title: &str,
    x_desc: &str,
    y_desc: &str,
) -> Result<String> {
    check_series(series)?;
    let mut svg = String::new();
    let frame = Frame {
        title,
        x_desc,
        y_desc,
        markers: false,
    };
    draw(
        SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area(),
        series,
        &frame,
    )?;
    Ok(svg)
}

/// A line chart as a `width × height` RGB image.
pub fn line_chart_png(
    series: &[Series],
    (title, x_desc, y_desc): (&str, &str, &str),
    width: u32,
    height: u32,
) -> Result<RgbImage> {
    check_series(series)?;
    let frame = Frame {
        title,
        x_desc,
        y_desc,
        markers: false,
    };
    bitmap(series, &frame, width, height)
}

fn bitmap(series: &[Series], frame: &Frame, width: u32, height: u32) -> Result<RgbImage> {
    if !(200..=4096).contains(&width) || !(150..=4096).contains(&height) {
        return Err(Error::Parameter(format!(
            "plot size {width}×{height} is outside 200..=4096 × 150..=4096"
        )));
    }
    let mut buffer = vec![0u8; (width * height * 3) as usize];
    draw(
        BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area(),
        series,
        frame,
    )?;
    RgbImage::from_raw(width, height, buffer).ok_or_else(|| render_error("buffer size"))
}

/// The plot as an SVG document.
pub fn weight_plot_svg(curves: &[WeightCurve], title: &str) -> Result<String> {
    check(curves)?;
    let mut svg = String::new();
    draw(
        SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area(),
        &weight_series(curves),
        &weight_frame(title),
    )?;
    Ok(svg)
}

#[cfg(not(target_arch = "wasm32"))]
static FONT: Once = Once::new();

/// The plot as a `width × height` RGB image.
pub fn weight_plot_png(
    curves: &[WeightCurve],
    title: &str,
    width: u32,
    height: u32,
) -> Result<RgbImage> {
    check(curves)?;
    bitmap(&weight_series(curves), &weight_frame(title), width, height)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curves() -> Vec<WeightCurve> {
        vec![
            WeightCurve {
                name: "LIME".into(),
                weights: vec![0.1, -0.2, 0.3],
            },
            WeightCurve {
                name: "CamLIME".into(),
                weights: vec![0.05, 0.0, 0.4],
            },
        ]
    }

    #[test]
    fn svg_and_png_plots() {
        let svg = weight_plot_svg(&curves(), "chelsea").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("CamLIME") && svg.contains("segment id"));
        let png = weight_plot_png(&curves(), "chelsea", 600, 320).unwrap();
        let blue = png.pixels().filter(|p| p.0 == [31, 119, 180]).count();
        let red = png.pixels().filter(|p| p.0 == [214, 39, 40]).count();
        assert!(blue > 50 && red > 50, "{blue} {red}");
        assert!(weight_plot_png(&curves(), "x", 10, 10).is_err());
        let ragged = vec![
            curves()[0].clone(),
            WeightCurve {
                name: "x".into(),
                weights: vec![1.0],
            },
        ];
        assert!(weight_plot_svg(&ragged, "x").is_err());
    }
}
