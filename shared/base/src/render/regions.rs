//! A segmentation region drawn on a picture: its pixels tinted, its boundary outlined.

use image::{Rgb, RgbImage};

use crate::Result;
use crate::region::Region;

/// The explained region's outline colour (the explained box's).
pub const REGION: [u8; 3] = [255, 40, 40];
/// The predicted mask's tint.
pub const PREDICTED: [u8; 3] = [40, 220, 255];

/// The region's mask looked up at each pixel of a `width × height` picture (nearest neighbour).
fn lookup(region: &Region, width: u32, height: u32) -> Result<impl Fn(i64, i64) -> bool> {
    let mask = region.mask()?;
    let [h, w] = region.size;
    let (width, height) = (i64::from(width), i64::from(height));
    Ok(move |x: i64, y: i64| {
        if !(0..width).contains(&x) || !(0..height).contains(&y) {
            return false;
        }
        let my = (y as usize * h) / height as usize;
        let mx = (x as usize * w) / width as usize;
        mask[my * w + mx]
    })
}

/// `image` with the boundary of `region` (a map of any size, scaled to the picture) drawn in
/// `color`: every inside pixel with an outside pixel within `thickness` (4-neighbourhood).
pub fn outline_region(
    image: &RgbImage,
    region: &Region,
    color: [u8; 3],
    thickness: i64,
) -> Result<RgbImage> {
    let inside = lookup(region, image.width(), image.height())?;
    let mut out = image.clone();
    for (x, y, pixel) in out.enumerate_pixels_mut() {
        let (x, y) = (i64::from(x), i64::from(y));
        let edge = inside(x, y)
            && (1..=thickness).any(|d| {
                !inside(x - d, y) || !inside(x + d, y) || !inside(x, y - d) || !inside(x, y + d)
            });
        if edge {
            *pixel = Rgb(color);
        }
    }
    Ok(out)
}

/// `image` with `region`'s pixels blended toward `color` by `alpha`.
pub fn tint_region(
    image: &RgbImage,
    region: &Region,
    color: [u8; 3],
    alpha: f32,
) -> Result<RgbImage> {
    let inside = lookup(region, image.width(), image.height())?;
    let mut out = image.clone();
    for (x, y, pixel) in out.enumerate_pixels_mut() {
        if inside(i64::from(x), i64::from(y)) {
            for (c, &target) in pixel.0.iter_mut().zip(&color) {
                *c = (f32::from(*c) * (1.0 - alpha) + f32::from(target) * alpha).round() as u8;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outline_is_the_regions_edge_at_the_pictures_scale() {
        // A 2×2 map whose top-left pixel is inside, drawn on an 8×8 picture: a 4×4 square.
        let region = Region::from_mask([2, 2], &[true, false, false, false]);
        let image = RgbImage::new(8, 8);
        let out = outline_region(&image, &region, [255, 0, 0], 1).unwrap();
        let painted: Vec<(u32, u32)> = out
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 == [255, 0, 0])
            .map(|(x, y, _)| (x, y))
            .collect();
        // The square's border (picture edges count as outside): 4 × 4 − 2 × 2 inner pixels.
        assert_eq!(painted.len(), 12);
        assert!(
            painted.contains(&(3, 3)) && !painted.contains(&(1, 1)) && !painted.contains(&(4, 4))
        );
        let tinted = tint_region(&image, &region, [200, 100, 0], 0.5).unwrap();
        assert_eq!(tinted.get_pixel(0, 0).0, [100, 50, 0]);
        assert_eq!(tinted.get_pixel(4, 0).0, [0, 0, 0]);
    }
}
