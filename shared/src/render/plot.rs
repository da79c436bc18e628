//! The weight–feature plot of the paper: each method's surrogate coefficient per segment id
//! (e.g. LIME against CamLIME), drawn with plotters as SVG (text left to the viewer's fonts) or
//! PNG (text in the bundled DejaVu Sans).

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

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    curves: &[WeightCurve],
    title: &str,
    n: usize,
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
    let weights = curves.iter().flat_map(|c| c.weights.iter().copied());
    let (lo, hi) = weights.fold((0.0f64, 0.0f64), |(lo, hi), w| (lo.min(w), hi.max(w)));
    let margin = ((hi - lo) * 0.08).max(1e-6);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (lo - margin)..(hi + margin))
        .map_err(render_error)?;
    chart
        .configure_mesh()
        .x_desc("segment id")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("weight")
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(render_error)?;
    chart
        .draw_series(LineSeries::new(
            [(-0.5, 0.0), (n as f64 - 0.5, 0.0)],
            RGBColor(120, 120, 120),
        ))
        .map_err(render_error)?;
    for (k, curve) in curves.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let points: Vec<(f64, f64)> = curve
            .weights
            .iter()
            .enumerate()
            .map(|(i, &w)| (i as f64, w))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(render_error)?
            .label(curve.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(render_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(render_error)?;
    root.present().map_err(render_error)
}

/// The plot as an SVG document.
pub fn weight_plot_svg(curves: &[WeightCurve], title: &str) -> Result<String> {
    let n = check(curves)?;
    let mut svg = String::new();
    draw(
        SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area(),
        curves,
        title,
        n,
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
    let n = check(curves)?;
    if !(200..=4096).contains(&width) || !(150..=4096).contains(&height) {
        return Err(Error::Parameter(format!(
            "plot size {width}×{height} is outside 200..=4096 × 150..=4096"
        )));
    }
    let mut buffer = vec![0u8; (width * height * 3) as usize];
    draw(
        BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area(),
        curves,
        title,
        n,
    )?;
    RgbImage::from_raw(width, height, buffer).ok_or_else(|| render_error("buffer size"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
