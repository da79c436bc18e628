//! The paper's other architectures (torchvision's ResNet18, AlexNet, VGG16, GoogLeNet,
//! Inception-v3, DenseNet121) with deterministic weights: every gradient CAM runs at the
//! paper's target layer, and Grad-CAM, HiResCAM and LayerCAM agree with pytorch-grad-cam on
//! the same weights (fixtures: `fixtures/architectures/generate.py`, which commits the graphs
//! without weights; `fill` here recomputes them).

use crate::common::{fixture, map_agreement, png16_map, shared_normal};
use camlime_core::Sequential;
use camlime_core::cam::{CamMethod, compute_tensor};
use camlime_core::engine::EngineChoice;
use camlime_core::grad::BackwardRule;
use camlime_core::ndarray::{Array2, Array4};
use camlime_core::{Classifier, ExplainConfig, ModelSpec};
use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::pb::tensor_proto::DataType;

/// The fixture script's `fill`: FNV-1a of the name seeds a splitmix64 stream of 24-bit
/// uniforms, shaped by the tensor's role.
fn fill(name: &str, dims: &[usize]) -> Vec<f32> {
    let mut state: u64 = 0xCBF2_9CE4_8422_2325;
    for byte in name.bytes() {
        state = (state ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3);
    }
    let count: usize = dims.iter().product();
    let fan_in: usize = dims.iter().skip(1).product();
    (1..=count as u64)
        .map(|i| {
            let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f64 / f64::from(1u32 << 24);
            let signed = 2.0 * u - 1.0;
            let value = if name.ends_with("running_var") {
                1.0 + 0.5 * u
            } else if name.ends_with("running_mean") {
                0.2 * signed
            } else if name.ends_with("bias") {
                0.05 * signed
            } else if dims.len() == 1 {
                1.0 + 0.2 * signed
            } else {
                signed * (6.0 / fan_in as f64).sqrt()
            };
            value as f32
        })
        .collect()
}

fn load(arch: &str, size: usize) -> Classifier {
    let bytes = std::fs::read(fixture(&format!("architectures/{arch}.onnx"))).unwrap();
    let mut proto = ModelProto::decode(bytes.as_slice()).unwrap();
    for init in &mut proto.graph.as_mut().unwrap().initializer {
        if init.data_type == DataType::Float as i32 {
            let dims: Vec<usize> = init.dims.iter().map(|&d| d as usize).collect();
            init.float_data = fill(&init.name, &dims);
        }
    }
    let mut spec = ModelSpec::user_model(arch);
    spec.output = Some("logits".into());
    spec.input_size = [size as u32, size as u32];
    Classifier::new(&proto.encode_to_vec(), spec).unwrap()
}

fn check(arch: &str) {
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("architectures/{arch}.json"))).unwrap(),
    )
    .unwrap();
    let size = summary["size"].as_u64().unwrap() as usize;
    let target = summary["target"].as_u64().unwrap() as usize;
    let classifier = load(arch, size);
    let input = Array4::from_shape_vec(
        (1, 3, size, size),
        shared_normal(11, 3 * size * size)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
    )
    .unwrap();
    let mut seeds = Array2::<f32>::zeros((1, classifier.num_classes()));
    seeds[(0, target)] = 1.0;
    let out = classifier
        .gradients(
            input.view(),
            seeds.view(),
            &["target_layer"],
            false,
            BackwardRule::Standard,
        )
        .unwrap();
    let norm = |a: &camlime_core::ndarray::ArrayD<f32>| {
        a.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt()
    };
    let relative = |ours: f64, key: &str| (ours / summary[key].as_f64().unwrap() - 1.0).abs();
    let logits_error = relative(
        out.logits
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt(),
        "logits_norm",
    );
    let activation_error = relative(norm(&out.activations[0]), "activation_norm");
    let gradient_error = relative(norm(&out.gradients[0]), "gradient_norm");
    eprintln!(
        "{arch}: norms of logits / activation / gradient off by {logits_error:.1e} / \
         {activation_error:.1e} / {gradient_error:.1e}"
    );
    assert!(logits_error < 1e-4 && activation_error < 1e-4 && gradient_error < 1e-3);
    // The lowered plan covers every op of the architecture and agrees with tract.
    let report = classifier.engine_report();
    assert_eq!(report.forward, "cnn", "{arch}: {report}");
    let tract = load(arch, size)
        .with_engine_choice(EngineChoice::Named("tract".into()))
        .unwrap();
    let ours = classifier.forward(input.view(), &["target_layer"]).unwrap();
    let theirs = tract.forward(input.view(), &["target_layer"]).unwrap();
    let gap = |a: &[f32], b: &[f32]| {
        let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    };
    let logits_gap = gap(
        ours.logits.as_slice().unwrap(),
        theirs.logits.as_slice().unwrap(),
    );
    let layer_gap = gap(
        ours.activations[0].as_slice().unwrap(),
        theirs.activations[0].as_slice().unwrap(),
    );
    eprintln!("{arch}: lowered plan vs tract: logits {logits_gap:.1e}, layer {layer_gap:.1e}");
    assert!(logits_gap < 1e-4 && layer_gap < 1e-4);
    // Every op of the graph has a backward rule: the gradient model down to the input builds.
    classifier
        .gradient_model(&[], true, BackwardRule::Standard)
        .unwrap();
    for method in CamMethod::ALL.into_iter().filter(|m| m.uses_gradients()) {
        let mut config = ExplainConfig {
            target: Some(target),
            ..Default::default()
        };
        config.cam.layers = vec!["target_layer".into()];
        let map = compute_tensor(&classifier, input.view(), method, &config, &Sequential)
            .unwrap()
            .map;
        assert!(
            map.values()
                .iter()
                .all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
            "{arch} {}: map outside [0, 1]",
            method.name()
        );
        if matches!(
            method,
            CamMethod::GradCam | CamMethod::HiResCam | CamMethod::LayerCam
        ) {
            let reference = png16_map(&format!("architectures/{arch}.{}.png", method.name()));
            let (pearson, max_abs) = map_agreement(&map, &reference);
            eprintln!(
                "{arch} {}: pearson {pearson:.6} max|Δ| {max_abs:.2e}",
                method.name()
            );
            assert!(
                pearson >= 0.999 && max_abs <= 1e-3,
                "{arch} {}",
                method.name()
            );
        }
    }
}

#[test]
fn resnet18() {
    check("resnet18");
}

#[test]
fn alexnet() {
    check("alexnet");
}

#[test]
fn vgg16() {
    check("vgg16");
}

#[test]
fn googlenet() {
    check("googlenet");
}

#[test]
fn inception_v3() {
    check("inception_v3");
}

#[test]
fn densenet121() {
    check("densenet121");
}
