//! `camlime detect` and a detector's explanations end to end: the boxes of the bundled NanoDet,
//! one box explained (record, pictures with the box), and one clear error for every way of
//! asking a detector what it cannot answer.

use serde_json::Value;

use crate::common::{camlime, fails_with_one_line, scratch, success};

const MOTORCYCLE: &str = "models/samples/motorcycle_left.png";

#[test]
fn detect_lists_boxes_in_text_json_and_a_picture() {
    let out = scratch("detect");
    let text = success(&[
        "detect",
        MOTORCYCLE,
        "models/samples/chelsea.png",
        "--out",
        out.to_str().unwrap(),
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "models/samples/motorcycle_left.png (nanodet): 1 detection"
    );
    assert!(
        lines[1].contains("3 motorcycle") && lines[1].contains("0.778"),
        "{text}"
    );
    assert!(lines[2].starts_with("models/samples/chelsea.png (nanodet): 4 detections"));
    let picture = image::open(out.join("motorcycle_left.detections.png")).unwrap();
    assert_eq!((picture.width(), picture.height()), (741, 500));
    let json: Value = serde_json::from_str(&success(&[
        "detect",
        MOTORCYCLE,
        "--json",
        "--score-threshold",
        "0.2",
    ]))
    .unwrap();
    assert_eq!(json["input_size"], serde_json::json!([416, 416]));
    assert_eq!(json["image_size"], serde_json::json!([500, 741]));
    let detections = json["detections"].as_array().unwrap();
    assert!(detections.len() > 1, "a lower threshold shows more boxes");
    let first = &detections[0];
    assert_eq!(first["label"], "motorcycle");
    // The photo's box is the input's scaled by 741/416 and 500/416.
    let scale = first["image_box"]["x1"].as_f64().unwrap() / first["box"]["x1"].as_f64().unwrap();
    assert!((scale - 741.0 / 416.0).abs() < 1e-4, "{scale}");
}

#[test]
fn faces_are_detected_by_the_face_detector() {
    let text = success(&[
        "detect",
        "models/samples/astronaut.png",
        "--model",
        "blazeface",
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "models/samples/astronaut.png (blazeface): 1 detection"
    );
    assert!(
        lines[1].contains("face") && lines[1].contains("0.88"),
        "{text}"
    );
    let output = camlime(&[
        "explain",
        "models/samples/rocket.jpg",
        "--model",
        "blazeface",
        "--method",
        "eigencam",
    ]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("detects no face above its score threshold"),
        "{stderr}"
    );
}

#[test]
fn a_box_is_explained_with_its_score_and_drawn() {
    let out = scratch("explain-box");
    let record: Value = serde_json::from_str(&success(&[
        "explain",
        MOTORCYCLE,
        "--model",
        "nanodet",
        "--method",
        "eigencam",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(record["config"]["task"]["kind"], "detection");
    assert_eq!(record["task"]["kind"], "detection");
    assert_eq!(record["task"]["target"]["detection"]["label"], "motorcycle");
    let score = record["target"]["probability"].as_f64().unwrap();
    assert!((score - 0.7784).abs() < 1e-3, "{score}");
    assert_eq!(
        record["layers"],
        serde_json::json!(["fpn.p3", "fpn.p4", "fpn.p5"])
    );
    for picture in ["overlay", "detections"] {
        assert!(
            out.join(format!("motorcycle_left.eigencam.{picture}.png"))
                .is_file()
        );
    }
    // The explained box is drawn in red on the overlay.
    let overlay = image::open(out.join("motorcycle_left.eigencam.overlay.png"))
        .unwrap()
        .to_rgb8();
    let b = &record["task"]["target"]["detection"]["box"];
    let (x, y) = (
        b["x0"].as_f64().unwrap().round() as u32,
        ((b["y0"].as_f64().unwrap() + b["y1"].as_f64().unwrap()) / 2.0) as u32,
    );
    assert_eq!(overlay.get_pixel(x, y).0, [255, 40, 40]);
}

#[test]
fn detector_misuse_gets_one_clear_line() {
    let eval_out = scratch("detect-eval");
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "explain", MOTORCYCLE, "--model", "nanodet", "--method", "eigencam", "--box", "3",
            ],
            "box 3 is out of range: 1 detection",
        ),
        (
            &[
                "explain", MOTORCYCLE, "--model", "nanodet", "--method", "eigencam", "--class",
                "80",
            ],
            "class 80 is out of range",
        ),
        (
            &["explain", MOTORCYCLE, "--method", "eigencam", "--box", "0"],
            "`mobilenet_v2` is a classification model but the explanation asks for detection",
        ),
        (
            &["detect", MOTORCYCLE, "--model", "mobilenet_v2"],
            "not a detector",
        ),
        (
            &["predict", MOTORCYCLE, "--model", "nanodet"],
            "is a detector",
        ),
        (
            &[
                "eval",
                "--images",
                "models/samples",
                "--model",
                "nanodet",
                "--methods",
                "eigencam",
                "--out",
                eval_out.to_str().unwrap(),
            ],
            "is a detection model: evaluation metrics score a classifier's class per image",
        ),
    ];
    fails_with_one_line(&cases);
    let rocket = camlime(&[
        "explain",
        "models/samples/rocket.jpg",
        "--model",
        "nanodet",
        "--method",
        "eigencam",
    ]);
    let stderr = String::from_utf8(rocket.stderr).unwrap();
    assert!(
        stderr.contains("detects no object above its score threshold"),
        "{stderr}"
    );
}
