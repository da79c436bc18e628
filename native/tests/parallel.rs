//! Spreading images over threads gives exactly the single-thread results.

#![allow(clippy::unwrap_used)]

use camlime::models::{Bundle, models_dir};
use camlime::parallel::Threads;
use camlime_core::ndarray::Array4;
use camlime_core::runtime;

#[test]
fn split_forward_equals_one_thread_bit_for_bit() {
    let bundle = Bundle::open(&models_dir(None).unwrap()).unwrap();
    let model = bundle.load("mobilenet_v2").unwrap().classifier;
    let input = Array4::<f32>::from_shape_fn((5, 3, 224, 224), |(n, c, y, x)| {
        ((n * 31 + c * 7 + y * 3 + x) % 17) as f32 / 8.0 - 1.0
    });
    let one = model.forward(input.view(), &["features.17"]).unwrap();
    for threads in [2, 3, 8] {
        let many = runtime::forward(
            &Threads::new(threads),
            &model,
            input.view(),
            &["features.17"],
        )
        .unwrap();
        assert_eq!(one.logits, many.logits, "{threads} threads");
        assert_eq!(one.activations, many.activations, "{threads} threads");
    }
}
