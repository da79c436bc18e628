//! `camlime explain` and `camlime compare` end to end: the record, the pictures, identical
//! results on one and two threads, exact replay, and clean errors for bad input.

use crate::common::{camlime, repo, scratch};

use serde_json::Value;

fn record(args: &[&str]) -> Value {
    let output = camlime(args);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn without_timings(mut record: Value) -> Value {
    record["timings"] = Value::Null;
    record
}

const CHELSEA: &str = "models/samples/chelsea.png";

#[test]
fn camlime_writes_a_full_record_and_its_pictures() {
    let out = scratch("explain-full");
    let out_arg = out.to_str().unwrap();
    let r = record(&[
        "explain",
        CHELSEA,
        "--samples",
        "60",
        "--out",
        out_arg,
        "--json",
    ]);
    assert_eq!(r["format"], "camlime-explanation/2");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("models/manifest.json")).unwrap())
            .unwrap();
    let entry = manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "mobilenet_v2")
        .unwrap();
    assert_eq!(r["model"]["sha256"], entry["sha256"]);
    assert_eq!(r["target"]["class"], 285);
    assert_eq!(r["config"]["method"], "camlime");
    assert_eq!(r["config"]["seed"], 0);
    assert_eq!(r["layers"], serde_json::json!(["features.17"]));
    let segments = r["segments"]["count"].as_u64().unwrap();
    assert!((25..=45).contains(&segments), "{segments} segments");
    assert_eq!(r["explanations"].as_array().unwrap().len(), 5);
    assert_eq!(r["lime_baseline"].as_array().unwrap().len(), 5);
    let main = &r["explanations"][0];
    assert_eq!(main["label"], 285);
    assert_eq!(main["ranked"].as_array().unwrap().len() as u64, segments);
    assert!(main["score"].as_f64().unwrap().is_finite());
    assert_eq!(r["cam"]["map"]["height"], 224);
    assert_eq!(r["cam"]["layers"][0]["map"]["height"], 7);
    for suffix in [
        "json",
        "overlay.png",
        "mask.png",
        "weights.png",
        "weights.svg",
    ] {
        let path = out.join(format!("chelsea.camlime.{suffix}"));
        assert!(path.is_file(), "missing {}", path.display());
    }
    let mask = image::open(out.join("chelsea.camlime.mask.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(mask.dimensions(), (224, 224));
    assert!(
        mask.pixels().any(|p| p.0 == [255, 255, 0]),
        "no boundary drawn"
    );
}

#[test]
fn two_threads_give_the_one_thread_results_and_replay_is_exact() {
    let out = scratch("replay");
    let out_arg = out.to_str().unwrap();
    let common = [
        "explain",
        CHELSEA,
        "--samples",
        "40",
        "--seed",
        "3",
        "--out",
        out_arg,
    ];
    let one = record(&[&common[..], &["--threads", "1", "--json"]].concat());
    let two = record(&[&common[..], &["--threads", "2", "--json"]].concat());
    assert_eq!(without_timings(one), without_timings(two.clone()));

    let saved = out.join("chelsea.camlime.json");
    let replayed = camlime(&[
        "explain",
        "--replay",
        saved.to_str().unwrap(),
        "--out",
        out_arg,
    ]);
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert!(String::from_utf8_lossy(&replayed.stderr).contains("reproduced"));

    let mut tampered = two;
    tampered["explanations"][0]["intercept"] = Value::from(12.5);
    let bad = out.join("tampered.json");
    std::fs::write(&bad, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let failed = camlime(&[
        "explain",
        "--replay",
        bad.to_str().unwrap(),
        "--out",
        out_arg,
    ]);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("did not reproduce"));
}

#[test]
fn lime_and_gradient_free_cams_run_from_the_cli() {
    let out = scratch("methods");
    let out_arg = out.to_str().unwrap();
    let lime = record(&[
        "explain",
        CHELSEA,
        "--method",
        "lime",
        "--samples",
        "30",
        "--segmenter",
        "slic",
        "--hide-color",
        "mean",
        "--out",
        out_arg,
        "--json",
    ]);
    assert!(lime["cam"].is_null());
    assert_eq!(lime["segments"]["algorithm"], "slic");
    let cam = record(&[
        "explain", CHELSEA, "--method", "eigencam", "--out", out_arg, "--json",
    ]);
    assert!(cam["segments"].is_null());
    assert_eq!(cam["cam"]["method"], "eigencam");
    assert!(out.join("chelsea.eigencam.overlay.png").is_file());
    let fused = record(&[
        "explain",
        CHELSEA,
        "--samples",
        "30",
        "--layer",
        "features.14",
        "--layer",
        "features.17",
        "--mode",
        "grid",
        "--out",
        out_arg,
        "--json",
    ]);
    assert_eq!(fused["layer_explanations"].as_array().unwrap().len(), 2);
    assert_eq!(fused["cam"]["layers"].as_array().unwrap().len(), 2);
}

#[test]
fn compare_writes_a_labelled_grid() {
    let out = scratch("compare");
    let grid = out.join("grid.png");
    let output = camlime(&[
        "compare",
        CHELSEA,
        "models/samples/coffee.png",
        "--methods",
        "lime,eigencam,random",
        "--samples",
        "20",
        "--out",
        grid.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let image = image::open(&grid).unwrap().to_rgb8();
    assert!(
        image.width() > 3 * 224 && image.height() > 2 * 224,
        "{:?}",
        image.dimensions()
    );
}

#[test]
fn gradient_cams_and_input_attributions_run_from_the_cli() {
    let out = scratch("gradients");
    let out_arg = out.to_str().unwrap();
    for (method, extra) in [
        ("gradcam", vec!["--aug-smooth"]),
        ("gradcam++", vec!["--eigen-smooth"]),
        ("fullgrad", vec![]),
        (
            "integratedgradients",
            vec!["--steps", "4", "--integration", "riemann_trapezoid"],
        ),
        (
            "saliency",
            vec!["--noise-tunnel", "vargrad", "--noise-samples", "2"],
        ),
        (
            "occlusion",
            vec![
                "--occlusion-window",
                "3,112,112",
                "--occlusion-stride",
                "3,112,112",
            ],
        ),
    ] {
        let args = [
            &[
                "explain", CHELSEA, "--method", method, "--out", out_arg, "--json",
            ][..],
            &extra,
        ]
        .concat();
        let cam = record(&args);
        assert_eq!(cam["cam"]["method"], method, "{method}");
        assert_eq!(cam["target"]["class"], 285, "{method}");
    }
    // CamLIME reweights with any of them.
    let camlime = record(&[
        "explain",
        CHELSEA,
        "--samples",
        "30",
        "--cam",
        "layercam",
        "--out",
        out_arg,
        "--json",
    ]);
    assert_eq!(camlime["cam"]["method"], "layercam");
    assert_eq!(camlime["explanations"][0]["label"], 285);
}

#[test]
fn bad_input_is_one_clear_error_line() {
    let out = scratch("bad-cli");
    let out_arg = out.to_str().unwrap();
    let malformed = out.join("malformed.json");
    std::fs::write(&malformed, b"{\"format\": 3").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--method", "magic"], "unknown method `magic`"),
        (
            vec!["--layer", "features.99"],
            "unknown layer `features.99`",
        ),
        (vec!["--samples", "0"], "must be in 2..=100000, got 0"),
        (vec!["--samples", "5000000"], "must be in 2..=100000"),
        (
            vec!["--segmenter", "watershed"],
            "unknown segmenter `watershed`",
        ),
        (
            vec!["--mode", "diagonal"],
            "unknown CamLIME mode `diagonal`",
        ),
        (
            vec!["--hide-color", "300"],
            "hide colour must be `mean` or 0–255",
        ),
        (vec!["--cam", "grad-cam"], "unknown CAM method `grad-cam`"),
        (
            vec!["--target", "5000"],
            "target class 5000 is out of range",
        ),
        (vec!["--kernel-width=-1"], "kernel_width must be positive"),
        (
            vec!["--selection", "best"],
            "unknown feature selection `best`",
        ),
        (
            vec![
                "--method",
                "integratedgradients",
                "--integration",
                "simpson",
            ],
            "unknown integration `simpson`",
        ),
        (
            vec!["--method", "integratedgradients", "--steps", "0"],
            "integrated gradients needs 1..=4096 steps",
        ),
        (
            vec!["--method", "occlusion", "--occlusion-window", "3,300,300"],
            "does not fit the input",
        ),
        (
            vec!["--method", "saliency", "--noise-tunnel", "median"],
            "unknown noise tunnel `median`",
        ),
        (
            vec![
                "--method",
                "saliency",
                "--noise-tunnel",
                "smoothgrad",
                "--noise-samples",
                "0",
            ],
            "the noise tunnel needs 1..=1000 samples",
        ),
    ];
    for (extra, expected) in cases {
        let args = [
            &["explain", CHELSEA, "--samples", "20", "--out", out_arg][..],
            &extra,
        ]
        .concat();
        let args: Vec<&str> = if extra[0] == "--samples" {
            [&["explain", CHELSEA, "--out", out_arg][..], &extra].concat()
        } else {
            args
        };
        let output = camlime(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{extra:?} succeeded");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{extra:?}: {stderr}");
    }
    let output = camlime(&[
        "explain",
        "--replay",
        malformed.to_str().unwrap(),
        "--out",
        out_arg,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("not an explanation record"),
        "{stderr}"
    );
    let output = camlime(&[
        "explain",
        "shared/tests/fixtures/bad/truncated.png",
        "--out",
        out_arg,
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("camlime: error:"));
}

#[test]
fn a_fragile_cam_map_is_flagged_in_the_output_and_the_record() {
    let out = scratch("stability");
    let out_arg = out.to_str().unwrap();
    // FullGrad scales every bias channel on its own: on chelsea.png a float32-level nudge of
    // the input moves its map by about 1e-3 (endtoend.rs measures it against pytorch-grad-cam).
    let output = camlime(&["explain", CHELSEA, "--method", "fullgrad", "--out", out_arg]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("warning: the fullgrad map is unstable:")
            && text.contains("denominators near zero"),
        "{text}"
    );
    let saved = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(name)).unwrap()).unwrap()
    };
    let fullgrad = saved("chelsea.fullgrad.json");
    assert!(
        fullgrad["cam"]["stability"]["sensitivity"]
            .as_f64()
            .unwrap()
            > 1e-3
    );
    // Grad-CAM's map is steady: estimated, recorded, not flagged.
    let output = camlime(&["explain", CHELSEA, "--method", "gradcam", "--out", out_arg]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("warning"), "{text}");
    let gradcam = saved("chelsea.gradcam.json");
    assert!(gradcam["cam"]["stability"]["sensitivity"].as_f64().unwrap() < 1e-4);
}
