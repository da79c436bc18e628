//! Segmenters against scikit-image 0.26.0 on the sample photos' 224² base images
//! (fixtures: `fixtures/segmentation/generate.py`).

use crate::common::{SAMPLES, adjusted_rand_index, fixture, reference_labels, stem};
use camlime_core::segment::{FelzenszwalbConfig, QuickshiftConfig, SlicConfig};
use camlime_core::{Segmentation, SegmenterConfig, Sequential};
use image::RgbImage;
use ndarray_npy::ReadNpyExt;
use tract_onnx::prelude::tract_ndarray::Array2;

fn base_image(stem: &str) -> RgbImage {
    image::open(fixture(&format!("segmentation/{stem}.png")))
        .unwrap()
        .to_rgb8()
}

#[test]
fn quickshift_labels_are_identical_given_scikit_images_noise() {
    for stem in ["chelsea", "coffee"] {
        let file = std::fs::File::open(fixture(&format!(
            "segmentation/{stem}.quickshift.noise.npy"
        )))
        .unwrap();
        let noise = Array2::<f64>::read_npy(file).unwrap();
        let seg = QuickshiftConfig::default()
            .segment_with_noise(&base_image(stem), noise.as_slice().unwrap(), &Sequential)
            .unwrap();
        let reference = reference_labels(stem, "quickshift");
        let differing = seg
            .labels()
            .iter()
            .zip(&reference)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 0, "{stem}: {differing} pixels differ");
    }
    // The counts REFERENCE.md quotes for these crops.
    assert_eq!(
        Segmentation::new(224, 224, reference_labels("chelsea", "quickshift"))
            .unwrap()
            .count(),
        34
    );
}

#[test]
fn quickshift_with_its_own_seeded_noise_agrees_with_scikit_image() {
    for sample in SAMPLES {
        let stem = stem(sample);
        let seg = SegmenterConfig::default()
            .segment(&base_image(stem), 7)
            .unwrap();
        let ari = adjusted_rand_index(seg.labels(), &reference_labels(stem, "quickshift"));
        eprintln!("quickshift {stem}: ARI {ari:.4}");
        assert!(ari >= 0.99, "{stem}: ARI {ari}");
    }
}

#[test]
fn quickshift_is_deterministic_per_seed() {
    let image = base_image("coffee");
    let config = SegmenterConfig::default();
    assert_eq!(
        config.segment(&image, 3).unwrap(),
        config.segment(&image, 3).unwrap()
    );
}

#[test]
fn slic_agrees_with_scikit_image() {
    for sample in SAMPLES {
        let stem = stem(sample);
        let seg = SlicConfig::default().segment(&base_image(stem)).unwrap();
        let ari = adjusted_rand_index(seg.labels(), &reference_labels(stem, "slic"));
        eprintln!("slic {stem}: ARI {ari:.4}");
        assert!(ari >= 0.999_999, "{stem}: ARI {ari}");
    }
}

#[test]
fn felzenszwalb_agrees_with_scikit_image() {
    let lime_style = FelzenszwalbConfig {
        scale: 100.0,
        sigma: 0.5,
        min_size: 50,
    };
    for sample in SAMPLES {
        let stem = stem(sample);
        let image = base_image(stem);
        for (config, name) in [
            (FelzenszwalbConfig::default(), "felzenszwalb"),
            (lime_style.clone(), "felzenszwalb100"),
        ] {
            let seg = config.segment(&image).unwrap();
            let ari = adjusted_rand_index(seg.labels(), &reference_labels(stem, name));
            eprintln!("{name} {stem}: ARI {ari:.4}");
            assert!(ari >= 0.95, "{stem} {name}: ARI {ari}");
        }
    }
}

#[test]
fn bad_parameters_are_errors() {
    let image = base_image("chelsea");
    let bad_quickshift = QuickshiftConfig {
        kernel_size: 0.5,
        ..Default::default()
    };
    assert!(bad_quickshift.segment(&image, 0).is_err());
    assert!(
        QuickshiftConfig::default()
            .segment_with_noise(&image, &[0.0; 3], &Sequential)
            .is_err()
    );
    let bad_slic = SlicConfig {
        compactness: -1.0,
        ..Default::default()
    };
    assert!(bad_slic.segment(&image).is_err());
    let bad_felzenszwalb = FelzenszwalbConfig {
        scale: f64::NAN,
        ..Default::default()
    };
    assert!(bad_felzenszwalb.segment(&image).is_err());
    assert!(
        SegmenterConfig::default()
            .segment(&RgbImage::new(0, 0), 0)
            .is_err()
    );
}
