//! Labels drawn into images with the bundled DejaVu Sans (through `ab_glyph`), so grids and
//! plots look the same on every platform, the browser included.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use image::RgbImage;

/// The bundled font.
pub(crate) fn font() -> FontRef<'static> {
    FontRef::try_from_slice(dejavu::sans::regular()).expect("the bundled DejaVu Sans parses")
}

/// Width in pixels of `text` at `px` pixels per em.
pub(crate) fn text_width(px: f32, text: &str) -> f32 {
    let font = font();
    let scaled = font.as_scaled(PxScale::from(px));
    text.chars()
        .map(|c| scaled.h_advance(font.glyph_id(c)))
        .sum()
}

/// Draw `text` with its top-left corner at (x, y), alpha-blended in `color`.
pub(crate) fn draw_text(image: &mut RgbImage, x: f32, y: f32, px: f32, text: &str, color: [u8; 3]) {
    let font = font();
    let scale = PxScale::from(px);
    let scaled = font.as_scaled(scale);
    let baseline = y + scaled.ascent();
    let mut caret = x;
    let (width, height) = (image.width() as i32, image.height() as i32);
    for c in text.chars() {
        let id = font.glyph_id(c);
        let glyph = id.with_scale_and_position(scale, point(caret, baseline));
        caret += scaled.h_advance(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let (px_x, px_y) = (
                bounds.min.x as i32 + gx as i32,
                bounds.min.y as i32 + gy as i32,
            );
            if px_x < 0 || px_y < 0 || px_x >= width || px_y >= height {
                return;
            }
            let pixel = image.get_pixel_mut(px_x as u32, px_y as u32);
            for (value, &over) in pixel.0.iter_mut().zip(&color) {
                let (under, over) = (f32::from(*value), f32::from(over));
                *value = (under + (over - under) * coverage.clamp(0.0, 1.0)).round() as u8;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_leaves_ink_where_it_is_drawn() {
        let mut image = RgbImage::from_pixel(80, 30, image::Rgb([255, 255, 255]));
        draw_text(&mut image, 2.0, 2.0, 18.0, "CamLIME", [0, 0, 0]);
        let dark = image.pixels().filter(|p| p.0[0] < 128).count();
        assert!(dark > 50, "{dark} dark pixels");
        assert!(text_width(18.0, "CamLIME") > text_width(18.0, "Cam"));
    }
}
