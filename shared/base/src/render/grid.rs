//! Comparison grids like the paper's figures: rows × columns of images (methods, models,
//! layers, LIME vs CamLIME), with column headers, row labels and per-cell captions.

use image::{GenericImage, Rgb, RgbImage};

use super::text::{draw_text, text_width};
use crate::{Error, Result};

/// One cell of a grid.
#[derive(Clone, Debug)]
pub struct GridCell {
    /// The picture.
    pub image: RgbImage,
    /// A short line under it (may be empty).
    pub caption: String,
}

const HEADER_PX: f32 = 16.0;
const CAPTION_PX: f32 = 13.0;
const PAD: u32 = 8;

/// Lay out `cells[row][column]` on white with `column_labels` on top and `row_labels` on the
/// left. Rows must all have as many cells as there are column labels.
pub fn comparison_grid(
    cells: &[Vec<GridCell>],
    row_labels: &[String],
    column_labels: &[String],
) -> Result<RgbImage> {
    if cells.is_empty() || cells.len() != row_labels.len() {
        return Err(Error::Parameter(format!(
            "a grid needs one label per row: {} rows, {} labels",
            cells.len(),
            row_labels.len()
        )));
    }
    if cells
        .iter()
        .any(|row| row.len() != column_labels.len() || row.is_empty())
    {
        return Err(Error::Parameter(format!(
            "every grid row needs {} cells, one per column label",
            column_labels.len()
        )));
    }
    let cell_w = cells
        .iter()
        .flatten()
        .map(|c| c.image.width())
        .max()
        .unwrap_or(0);
    let cell_h = cells
        .iter()
        .flatten()
        .map(|c| c.image.height())
        .max()
        .unwrap_or(0);
    if cell_w * cell_h == 0 || cell_w > 4096 || cell_h > 4096 {
        return Err(Error::Parameter(format!(
            "grid cells must be between 1 and 4096 pixels a side, found {cell_w}×{cell_h}"
        )));
    }
    let label_w = row_labels
        .iter()
        .map(|l| text_width(HEADER_PX, l).ceil() as u32)
        .max()
        .unwrap_or(0)
        + 2 * PAD;
    let header_h = HEADER_PX as u32 + 2 * PAD;
    let caption_h = if cells.iter().flatten().any(|c| !c.caption.is_empty()) {
        CAPTION_PX as u32 + PAD
    } else {
        0
    };
    let step_x = cell_w + PAD;
    let step_y = cell_h + caption_h + PAD;
    let columns = column_labels.len() as u32;
    let width = label_w + columns * step_x + PAD;
    let height = header_h + cells.len() as u32 * step_y + PAD;
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let ink = [20, 20, 20];
    for (j, label) in column_labels.iter().enumerate() {
        let centre = label_w + j as u32 * step_x + cell_w / 2;
        let x = centre as f32 - text_width(HEADER_PX, label) / 2.0;
        draw_text(&mut canvas, x.max(0.0), PAD as f32, HEADER_PX, label, ink);
    }
    for (i, (row, label)) in cells.iter().zip(row_labels).enumerate() {
        let top = header_h + i as u32 * step_y;
        let y = top as f32 + cell_h as f32 / 2.0 - HEADER_PX / 2.0;
        draw_text(&mut canvas, PAD as f32, y, HEADER_PX, label, ink);
        for (j, cell) in row.iter().enumerate() {
            let left = label_w + j as u32 * step_x;
            canvas
                .copy_from(&cell.image, left, top)
                .map_err(|e| Error::Parameter(format!("grid cell: {e}")))?;
            if !cell.caption.is_empty() {
                let x = left as f32 + (cell_w as f32 - text_width(CAPTION_PX, &cell.caption)) / 2.0;
                let y = (top + cell_h) as f32 + PAD as f32 / 2.0;
                draw_text(
                    &mut canvas,
                    x.max(left as f32),
                    y,
                    CAPTION_PX,
                    &cell.caption,
                    ink,
                );
            }
        }
    }
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_every_cell_and_checks_shapes() {
        let red = RgbImage::from_pixel(20, 10, Rgb([255, 0, 0]));
        let cell = GridCell {
            image: red,
            caption: "p=0.75".into(),
        };
        let cells = vec![
            vec![cell.clone(), cell.clone()],
            vec![cell.clone(), cell.clone()],
        ];
        let rows = vec!["LIME".to_string(), "CamLIME".to_string()];
        let cols = vec!["chelsea".to_string(), "coffee".to_string()];
        let grid = comparison_grid(&cells, &rows, &cols).unwrap();
        let red_pixels = grid.pixels().filter(|p| p.0 == [255, 0, 0]).count();
        assert_eq!(red_pixels, 4 * 200);
        assert!(comparison_grid(&cells, &rows[..1], &cols).is_err());
        assert!(comparison_grid(&[vec![cell]], &rows[..1], &cols).is_err());
    }
}
