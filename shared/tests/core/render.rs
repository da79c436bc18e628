//! Rendering against pytorch-grad-cam's `show_cam_on_image` and lime's `get_image_and_mask` +
//! `mark_boundaries` (fixtures: `fixtures/render/generate.py`).

use crate::common::{fixture, reference_labels};
use camlime_core::Segmentation;
use camlime_core::cam::CamMap;
use camlime_core::ndarray;
use camlime_core::render::{MaskOptions, YELLOW, cam_overlay, lime_mask, mark_boundaries};
use ndarray_npy::ReadNpyExt;
use serde_json::Value;

fn png(relative: &str) -> image::RgbImage {
    image::open(fixture(relative)).unwrap().to_rgb8()
}

fn level_differences(a: &image::RgbImage, b: &image::RgbImage) -> (u8, usize) {
    assert_eq!(a.dimensions(), b.dimensions());
    let diffs: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    (
        diffs.iter().copied().max().unwrap(),
        diffs.iter().filter(|&&d| d > 0).count(),
    )
}

#[test]
fn overlay_matches_show_cam_on_image() {
    let image = png("segmentation/chelsea.png");
    let file = std::fs::File::open(fixture("lime/chelsea.cam.npy")).unwrap();
    let cam = ndarray::Array2::<f32>::read_npy(file).unwrap();
    let cam = CamMap::new(224, 224, cam.into_raw_vec_and_offset().0).unwrap();
    let ours = cam_overlay(&image, &cam, 0.5).unwrap();
    let (max, count) = level_differences(&ours, &png("render/chelsea.overlay.png"));
    eprintln!("overlay: max level difference {max}, {count} values differ");
    assert!(max <= 1, "max level difference {max}");
}

#[test]
fn lime_masks_match_get_image_and_mask_with_boundaries() {
    let image = png("segmentation/chelsea.png");
    let labels = reference_labels("chelsea", "quickshift");
    let segmentation = Segmentation::new(224, 224, labels).unwrap();
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("lime/chelsea.json")).unwrap())
            .unwrap();
    let case = record["explanations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label_index"] == 0 && c["mode"] == "none" && c["design"] == "lime")
        .unwrap();
    let ranked: Vec<(usize, f64)> = case["ranked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap()))
        .collect();
    let variants = [
        ("positive", MaskOptions::default()),
        (
            "both",
            MaskOptions {
                positive_only: false,
                num_features: 8,
                ..Default::default()
            },
        ),
        (
            "hide_rest",
            MaskOptions {
                hide_rest: true,
                ..Default::default()
            },
        ),
    ];
    for (name, options) in variants {
        let (shown, mask) = lime_mask(&image, &segmentation, &ranked, &options).unwrap();
        let marked = mark_boundaries(&shown, &mask, YELLOW).unwrap();
        let (max, count) =
            level_differences(&marked, &png(&format!("render/chelsea.lime.{name}.png")));
        assert_eq!(
            (max, count),
            (0, 0),
            "{name}: {count} values differ, max {max}"
        );
    }
    let bad = MaskOptions {
        negative_only: true,
        ..Default::default()
    };
    assert!(lime_mask(&image, &segmentation, &ranked, &bad).is_err());
}
