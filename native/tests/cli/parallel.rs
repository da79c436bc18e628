//! Spreading images over threads gives exactly the single-thread results.

use camlime::models::{Bundle, models_dir};
use camlime::parallel::Threads;
use camlime_core::ndarray::Array4;
use std::path::Path;

use camlime_core::SegmenterConfig;

#[test]
fn split_forward_equals_one_thread_bit_for_bit() {
    let bundle = Bundle::open(&models_dir(None).unwrap()).unwrap();
    let model = bundle.load("mobilenet_v2").unwrap().classifier;
    let input = Array4::<f32>::from_shape_fn((5, 3, 224, 224), |(n, c, y, x)| {
        ((n * 31 + c * 7 + y * 3 + x) % 17) as f32 / 8.0 - 1.0
    });
    let one = model.forward(input.view(), &["features.17"]).unwrap();
    for threads in [2, 3, 8] {
        let many = model
            .forward_with(&Threads::new(threads), input.view(), &["features.17"])
            .unwrap();
        assert_eq!(one.logits, many.logits, "{threads} threads");
        assert_eq!(one.activations, many.activations, "{threads} threads");
    }
}

#[test]
fn quickshift_labels_do_not_depend_on_the_thread_count() {
    let image =
        image::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/samples/astronaut.png"))
            .unwrap()
            .to_rgb8();
    let image = image::imageops::resize(&image, 200, 150, image::imageops::FilterType::Triangle);
    let config = SegmenterConfig::default();
    let one = config.segment(&image, 9).unwrap();
    for threads in [2, 5] {
        assert_eq!(
            one,
            config
                .segment_with(&image, 9, &Threads::new(threads))
                .unwrap()
        );
    }
}
