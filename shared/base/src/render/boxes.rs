//! Detections drawn on a picture: each box's outline with its label and score above it, the
//! explained one thicker and in its own colour.

use image::{Rgb, RgbImage};

use super::text::{draw_text, text_width};
use crate::detection::{BoundingBox, Detection};

/// The explained box's colour.
const TARGET: [u8; 3] = [255, 40, 40];
/// Every other box's colour.
const OTHER: [u8; 3] = [40, 220, 255];

/// `image` with `detections` drawn (their boxes in `from` = `[height, width]` pixels, scaled
/// to the image), numbered in order; the one equal to `target`, if any, stands out.
pub fn draw_detections(
    image: &RgbImage,
    detections: &[Detection],
    from: [u32; 2],
    target: Option<&Detection>,
) -> RgbImage {
    let mut out = image.clone();
    let px = (image.width().min(image.height()) as f32 / 28.0).clamp(10.0, 28.0);
    for (i, d, b, color, _) in placed(image, detections, from, target) {
        outline(&mut out, &b, color, if color == TARGET { 3 } else { 1 });
        let text = format!("{i} {} {:.2}", d.label, d.score);
        let (x, y) = (b.x0.max(0.0), (b.y0 - px * 1.2).max(0.0));
        fill(&mut out, x, y, text_width(px, &text) + 4.0, px * 1.2, color);
        draw_text(&mut out, x + 2.0, y, px, &text, [0, 0, 0]);
    }
    out
}

/// [`draw_detections`] without the labels: only the boxes. (What the browser page draws: it
/// lists the labels beside the picture, and the text renderer's font would add ~1 MB to its
/// wasm: 2.97 MB against 1.95 MB measured.)
pub fn outline_detections(
    image: &RgbImage,
    detections: &[Detection],
    from: [u32; 2],
    target: Option<&Detection>,
) -> RgbImage {
    let mut out = image.clone();
    for (_, _, b, color, thickness) in placed(image, detections, from, target) {
        outline(&mut out, &b, color, thickness);
    }
    out
}

/// Each detection with its number, its box scaled to `image`, its colour and line width, the
/// target last (so it is drawn on top).
fn placed<'a>(
    image: &RgbImage,
    detections: &'a [Detection],
    from: [u32; 2],
    target: Option<&Detection>,
) -> Vec<(usize, &'a Detection, BoundingBox, [u8; 3], i64)> {
    let to = [image.height(), image.width()];
    let is_target =
        |d: &Detection| target.is_some_and(|t| t.index == d.index && t.class == d.class);
    let mut order: Vec<(usize, &Detection)> = detections.iter().enumerate().collect();
    order.sort_by_key(|(_, d)| is_target(d));
    order
        .into_iter()
        .map(|(i, d)| {
            let (color, thickness) = if is_target(d) {
                (TARGET, 3)
            } else {
                (OTHER, 1)
            };
            (i, d, d.bbox.scaled(from, to), color, thickness)
        })
        .collect()
}

fn outline(image: &mut RgbImage, b: &BoundingBox, color: [u8; 3], thickness: i64) {
    let (w, h) = (i64::from(image.width()), i64::from(image.height()));
    let (x0, y0) = (b.x0.round() as i64, b.y0.round() as i64);
    let (x1, y1) = (
        (b.x1.round() as i64).min(w - 1),
        (b.y1.round() as i64).min(h - 1),
    );
    for t in 0..thickness {
        for x in x0..=x1 {
            put(image, x, y0 + t, color);
            put(image, x, y1 - t, color);
        }
        for y in y0..=y1 {
            put(image, x0 + t, y, color);
            put(image, x1 - t, y, color);
        }
    }
}

fn fill(image: &mut RgbImage, x: f32, y: f32, w: f32, h: f32, color: [u8; 3]) {
    for yy in y as i64..(y + h) as i64 {
        for xx in x as i64..(x + w) as i64 {
            put(image, xx, yy, color);
        }
    }
}

fn put(image: &mut RgbImage, x: i64, y: i64, color: [u8; 3]) {
    if (0..i64::from(image.width())).contains(&x) && (0..i64::from(image.height())).contains(&y) {
        image.put_pixel(x as u32, y as u32, Rgb(color));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_box_is_drawn_in_its_colour_at_scale() {
        let image = RgbImage::new(200, 100);
        let d = Detection {
            bbox: BoundingBox {
                x0: 10.0,
                y0: 20.0,
                x1: 50.0,
                y1: 40.0,
            },
            class: 0,
            label: "person".into(),
            score: 0.9,
            index: 3,
        };
        let drawn = draw_detections(&image, std::slice::from_ref(&d), [50, 100], Some(&d));
        // Scaled ×2: the left edge at x = 20 from y = 40 to 80.
        assert_eq!(drawn.get_pixel(20, 60).0, TARGET);
        assert_eq!(drawn.get_pixel(60, 60).0, [0, 0, 0]);
        let other = draw_detections(&image, std::slice::from_ref(&d), [50, 100], None);
        assert_eq!(other.get_pixel(20, 60).0, OTHER);
        // The label sits on a filled strip above the box; the outline alone has none.
        assert_eq!(drawn.get_pixel(25, 32).0, TARGET);
        let bare = outline_detections(&image, std::slice::from_ref(&d), [50, 100], Some(&d));
        assert_eq!(bare.get_pixel(20, 60).0, TARGET);
        assert_eq!(bare.get_pixel(25, 32).0, [0, 0, 0]);
    }
}
