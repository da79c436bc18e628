//! The gradient CAM family against pytorch-grad-cam 1.5.5 on both bundled models (fixtures:
//! `fixtures/gradcam/generate.py`), from the same input tensors: Pearson ≥ 0.999 and
//! max |Δ| ≤ 1e-3 on the normalised 224² maps; the feature-resolution quirk and multi-layer
//! fusion.

use crate::common::{bundled, map_agreement, npy, png16_map};
use camlime_core::ExplainConfig;
use camlime_core::Sequential;
use camlime_core::cam::{CamMap, CamMethod, compute_tensor};
use camlime_core::ndarray::Ix4;

/// The gradient CAMs, as the fixture script lists them.
fn gradient_methods() -> impl Iterator<Item = CamMethod> {
    CamMethod::ALL.into_iter().filter(|m| m.uses_gradients())
}

fn check(model: &str, layer: &str, stems: &[&str], variant: &str) {
    let classifier = bundled(model);
    let mut worst = (1.0f64, 0.0f32);
    for stem in stems {
        let input = npy(&format!("reference/{model}/{stem}.input.npy"))
            .into_dimensionality::<Ix4>()
            .unwrap();
        for method in gradient_methods() {
            let mut config = ExplainConfig::default();
            config.cam.layers = vec![layer.into()];
            config.cam.eigen_smooth = variant == ".eigen";
            config.cam.aug_smooth = variant == ".aug";
            let ours =
                compute_tensor(&classifier, input.view(), method, &config, &Sequential).unwrap();
            let reference = png16_map(&format!(
                "gradcam/{model}.{stem}.{}{variant}.png",
                method.name()
            ));
            let (pearson, max_abs) = map_agreement(&ours.map, &reference);
            eprintln!(
                "{model} {stem} {}{variant}: pearson {pearson:.6} max|Δ| {max_abs:.2e}",
                method.name()
            );
            worst = (worst.0.min(pearson), worst.1.max(max_abs));
            assert!(
                pearson >= 0.999,
                "{model} {stem} {}{variant}: pearson {pearson}",
                method.name()
            );
            assert!(
                max_abs <= 1e-3,
                "{model} {stem} {}{variant}: max |Δ| {max_abs}",
                method.name()
            );
        }
    }
    eprintln!(
        "{model}{variant}: {} maps, worst pearson {:.6}, worst max|Δ| {:.2e}",
        stems.len() * gradient_methods().count(),
        worst.0,
        worst.1
    );
}

#[test]
fn mobilenet_v2_gradient_cams_match_pytorch_grad_cam() {
    check(
        "mobilenet_v2",
        "features.17",
        &[
            "chelsea",
            "coffee",
            "astronaut",
            "rocket",
            "motorcycle_left",
        ],
        "",
    );
}

#[test]
fn efficientnet_lite0_gradient_cams_match_pytorch_grad_cam() {
    check(
        "efficientnet_lite0",
        "_blocks.15",
        &[
            "chelsea",
            "coffee",
            "astronaut",
            "rocket",
            "motorcycle_left",
        ],
        "",
    );
}

#[test]
fn eigen_smooth_matches_pytorch_grad_cam() {
    check("mobilenet_v2", "features.17", &["chelsea"], ".eigen");
}

#[test]
fn aug_smooth_matches_pytorch_grad_cam() {
    check("mobilenet_v2", "features.17", &["chelsea"], ".aug");
}

#[test]
fn feature_resolution_and_multi_layer_targets() {
    let classifier = bundled("mobilenet_v2");
    let input = npy("reference/mobilenet_v2/chelsea.input.npy")
        .into_dimensionality::<Ix4>()
        .unwrap();
    let run = |layers: &[&str], feature_resolution: bool| {
        let mut config = ExplainConfig::default();
        config.cam.layers = layers.iter().map(|l| (*l).to_owned()).collect();
        config.cam.feature_resolution = feature_resolution;
        compute_tensor(
            &classifier,
            input.view(),
            CamMethod::GradCam,
            &config,
            &Sequential,
        )
        .unwrap()
    };
    // The paper's Grad-CAM quirk: the map stays 7×7, the scaled native map; resized and
    // rescaled it is the regular map.
    let close = |a: &CamMap, b: &CamMap| {
        assert_eq!((a.height(), a.width()), (b.height(), b.width()));
        let max_abs = a
            .values()
            .iter()
            .zip(b.values())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(max_abs < 1e-5, "maps differ by {max_abs}");
    };
    let native = run(&["features.17"], true);
    assert_eq!((native.map.height(), native.map.width()), (7, 7));
    assert_eq!(
        native.layers[0].map,
        native.layers[0].native.clone().scaled()
    );
    close(&native.map, &native.layers[0].map);
    let full = run(&["features.17"], false);
    close(&native.map.resize(224, 224).scaled(), &full.map);
    // Several layers: each layer's map is the single-layer map; the fused map is their
    // ReLU'd mean, rescaled (pytorch-grad-cam's aggregation).
    let fused = run(&["features.14", "features.17"], false);
    let alone = run(&["features.14"], false);
    assert_eq!(fused.layers[0].map, alone.layers[0].map);
    assert_eq!(fused.layers[1].map, full.layers[0].map);
    let mean: Vec<f32> = alone.layers[0]
        .map
        .values()
        .iter()
        .zip(full.layers[0].map.values())
        .map(|(a, b)| (a.max(0.0) + b.max(0.0)) / 2.0)
        .collect();
    close(&fused.map, &CamMap::new(224, 224, mean).unwrap().scaled());
    // Layers at different resolutions cannot stay at feature resolution together.
    let mut config = ExplainConfig::default();
    config.cam.layers = vec!["features.7".into(), "features.17".into()];
    config.cam.feature_resolution = true;
    let grad_cam = CamMethod::GradCam;
    assert!(compute_tensor(&classifier, input.view(), grad_cam, &config, &Sequential).is_err());
}
