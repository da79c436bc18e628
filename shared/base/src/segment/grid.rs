//! A regular grid of rectangular cells: segment-free features for images where colour
//! superpixels mean little (and the fastest segmenter).

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::Segmentation;
use crate::{Error, Result};

/// Grid shape; cells are as equal as integer division allows.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GridConfig {
    /// Cells per column of the image (1..=image height).
    pub rows: usize,
    /// Cells per row of the image (1..=image width).
    pub cols: usize,
}

impl Default for GridConfig {
    fn default() -> Self {
        Self { rows: 7, cols: 7 }
    }
}

impl GridConfig {
    /// At least one row and one column (whether they fit is the image's question).
    pub fn validate(&self) -> Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Err(Error::Parameter(format!(
                "a grid needs at least one row and one column, got {}×{}",
                self.rows, self.cols
            )));
        }
        Ok(())
    }

    /// Label cell (i, j) as `i·cols + j`; pixel row r falls in cell ⌊r·rows/height⌋.
    pub fn segment(&self, image: &RgbImage) -> Result<Segmentation> {
        let (height, width) = (image.height() as usize, image.width() as usize);
        if self.rows == 0 || self.cols == 0 || self.rows > height || self.cols > width {
            return Err(Error::Parameter(format!(
                "grid of {}×{} cells does not fit a {height}×{width} image",
                self.rows, self.cols
            )));
        }
        let mut labels = Vec::with_capacity(height * width);
        for r in 0..height {
            let cell_row = r * self.rows / height;
            for c in 0..width {
                labels.push((cell_row * self.cols + c * self.cols / width) as u32);
            }
        }
        Segmentation::new(height, width, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_equal_and_numbered_row_major() {
        let image = RgbImage::new(224, 224);
        let seg = GridConfig { rows: 7, cols: 7 }.segment(&image).unwrap();
        assert_eq!(seg.count(), 49);
        assert!(seg.sizes().iter().all(|&n| n == 32 * 32));
        assert_eq!(seg.labels()[0], 0);
        assert_eq!(seg.labels()[223], 6);
        assert_eq!(seg.labels()[224 * 224 - 1], 48);
        assert!(GridConfig { rows: 300, cols: 2 }.segment(&image).is_err());
        assert!(GridConfig { rows: 0, cols: 2 }.segment(&image).is_err());
    }
}
