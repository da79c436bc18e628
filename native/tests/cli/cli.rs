//! The `camlime` binary end to end: real predictions, JSON output, and one clear line on stderr
//! with a non-zero exit for every kind of bad input.

use std::process::Output;

use crate::common::camlime;

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn predict_names_the_cat_and_the_espresso() {
    let text = stdout(&camlime(&[
        "predict",
        "models/samples/chelsea.png",
        "models/samples/coffee.png",
    ]));
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines[0], "models/samples/chelsea.png (mobilenet_v2)");
    assert!(lines[1].contains("285 Egyptian cat"), "{}", lines[1]);
    let p: f32 = lines[1].split_whitespace().last().unwrap().parse().unwrap();
    assert!((p - 0.7508).abs() <= 0.002, "p = {p}");
    assert!(lines[7].contains("967 espresso"), "{}", lines[7]);
}

#[test]
fn predict_json_is_machine_readable_and_respects_top() {
    let text = stdout(&camlime(&[
        "predict",
        "models/samples/chelsea.png",
        "--model",
        "efficientnet_lite0",
        "--top",
        "3",
        "--json",
    ]));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let predictions = value[0]["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3);
    assert_eq!(predictions[0]["class"], 285);
    assert_eq!(value[0]["model"], "efficientnet_lite0");
}

#[test]
fn exif_orientation_is_ignored_by_default_and_applied_on_request() {
    let photo = "shared/tests/fixtures/corpus/rocket_exif6.jpg";
    let predict = |extra: &[&str]| -> serde_json::Value {
        let args = [&["predict", photo, "--top", "1", "--json"][..], extra].concat();
        serde_json::from_str(&stdout(&camlime(&args))).unwrap()
    };
    // The tag says "rotate 90° clockwise": turned upright, the rocket scores differently.
    let stored = predict(&[]);
    let upright = predict(&["--exif-orientation", "apply"]);
    assert_eq!(stored, predict(&["--exif-orientation", "ignore"]));
    assert_ne!(
        stored[0]["predictions"][0]["probability"],
        upright[0]["predictions"][0]["probability"]
    );
    let output = camlime(&["predict", photo, "--exif-orientation", "sideways"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ignore, apply"), "{stderr}");
}

#[test]
fn a_user_onnx_file_works_like_a_bundled_model() {
    let text = stdout(&camlime(&[
        "predict",
        "models/samples/coffee.png",
        "--model",
        "models/mobilenet_v2.onnx",
        "--top",
        "1",
    ]));
    assert!(text.contains("967 espresso"), "{text}");
    let layers = stdout(&camlime(&[
        "layers",
        "--model",
        "models/mobilenet_v2.onnx",
        "--json",
    ]));
    let value: serde_json::Value = serde_json::from_str(&layers).unwrap();
    assert_eq!(value["default_layers"][0], "features.18");
}

#[test]
fn models_and_layers_list_the_bundle() {
    let models = stdout(&camlime(&["models"]));
    assert!(models.contains("mobilenet_v2") && models.contains("efficientnet_lite0"));
    let layers = stdout(&camlime(&["layers"]));
    assert!(
        layers.lines().any(|l| l.starts_with("features.17")
            && l.contains("320×7×7")
            && l.contains("(default)"))
    );
    assert_eq!(layers.lines().count(), 19);
}

#[test]
fn bad_input_gets_one_clear_line_and_a_failure_code() {
    let cases: [(&[&str], &str); 7] = [
        (&["predict", "no/such/photo.png"], "image not found"),
        (
            &["predict", "shared/tests/fixtures/bad/truncated.png"],
            "cannot decode image",
        ),
        (
            &["predict", "shared/tests/fixtures/bad/bomb_10gpx.png"],
            "over the limit",
        ),
        (
            &[
                "predict",
                "models/samples/chelsea.png",
                "--model",
                "resnet1000",
            ],
            "unknown model `resnet1000`",
        ),
        (
            &[
                "predict",
                "models/samples/chelsea.png",
                "--model",
                "models/manifest.json",
            ],
            "not an ONNX model",
        ),
        (
            &["layers", "--model", "no/such/model.onnx"],
            "cannot read model",
        ),
        (
            &[
                "predict",
                "models/samples/chelsea.png",
                "--models-dir",
                "/nonexistent",
            ],
            "cannot read /nonexistent/manifest.json",
        ),
    ];
    for (args, message) in cases {
        let output = camlime(args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("camlime: error: ") && stderr.contains(message),
            "{args:?}: {stderr}"
        );
    }
    let zero_top = camlime(&["predict", "models/samples/chelsea.png", "--top", "0"]);
    assert_eq!(
        zero_top.status.code(),
        Some(2),
        "clap rejects --top 0 as a usage error"
    );
}

#[test]
fn devices_report_the_cpu_and_why_cuda_is_or_is_not_usable() {
    let report: serde_json::Value =
        serde_json::from_str(&stdout(&camlime(&["devices", "--json"]))).unwrap();
    assert!(report["cpu"]["threads"].as_u64().unwrap() >= 1);
    let cuda = &report["cuda"];
    let libraries: Vec<&str> = cuda["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        libraries,
        ["driver", "nvrtc", "cublas", "cublaslt", "cudnn"]
    );
    let gpus = cuda["gpus"].as_array().unwrap();
    match cuda["problem"].as_str() {
        None => assert!(!gpus.is_empty() && cuda["driver_version"].is_string()),
        Some(problem) if cuda["libraries"][0]["present"] == false => {
            assert!(problem.contains("libcuda"), "{problem}");
            assert!(gpus.is_empty());
        }
        Some(problem) => assert!(!problem.is_empty()),
    }
    assert_eq!(report["models"]["mobilenet_v2"]["forward"], "cnn");
    assert_eq!(report["models"]["efficientnet_lite0"]["forward"], "cnn");
    let text = stdout(&camlime(&["devices"]));
    assert!(text.starts_with("cpu: "), "{text}");
    assert!(
        text.contains("mobilenet_v2         forward on cnn\n"),
        "{text}"
    );
    assert!(text.contains("\ncuda: "), "{text}");
}
