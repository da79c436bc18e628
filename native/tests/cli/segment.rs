//! A segmenter's explanations end to end: Selfie's predicted mask explained (record, pictures
//! with the region), a region given as a box or a mask of the photo (the same pixels, the same
//! value as the Python reference's), and one clear error for every misuse.

use serde_json::Value;

use crate::common::{camlime, fails_with_one_line, repo, scratch};

const ASTRONAUT: &str = "models/samples/astronaut.png";

fn explain(args: &[&str]) -> Value {
    let mut all = vec!["explain", ASTRONAUT, "--model", "selfie", "--json"];
    all.extend_from_slice(args);
    let output = camlime(&all);
    assert!(
        output.status.success(),
        "{all:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn reference() -> Value {
    let text = std::fs::read_to_string(repo("shared/tests/fixtures/selfie/selfie.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn close(a: &Value, b: &Value) -> bool {
    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    (a - b).abs() <= 1e-5 * (1.0 + b.abs())
}

#[test]
fn the_predicted_mask_is_explained_and_outlined() {
    let out = scratch("explain-region");
    let record = explain(&["--method", "gradcam", "--out", out.to_str().unwrap()]);
    let expected = &reference()["photos"]["astronaut.png"];
    assert_eq!(record["config"]["task"]["kind"], "segmentation");
    let task = &record["task"];
    assert_eq!(task["kind"], "segmentation");
    assert_eq!(task["region"], task["predicted"]);
    assert_eq!(task["predicted"]["runs"], expected["runs"]);
    assert!(
        close(&task["score"], &expected["mask_sum"]),
        "{}",
        task["score"]
    );
    assert_eq!(
        record["target"]["label"],
        "person logit summed over 35749 pixels"
    );
    for picture in ["overlay", "segmentation"] {
        let image = image::open(out.join(format!("astronaut.gradcam.{picture}.png")))
            .unwrap()
            .to_rgb8();
        let outlined = image.pixels().filter(|p| p.0 == [255, 40, 40]).count();
        assert!(outlined > 1000, "{picture}: {outlined} outline pixels");
    }
}

#[test]
fn a_box_or_a_mask_of_the_photo_is_the_same_region() {
    // The reference's box (60, 20, 180, 140) of the 256×256 input is (120, 40, 360, 280) of the
    // 512×512 photo.
    let expected = &reference()["photos"]["astronaut.png"]["box_sum"];
    let by_box = explain(&["--method", "eigencam", "--region", "120,40,360,280"]);
    let mut mask = image::GrayImage::new(512, 512);
    for y in 40..280 {
        for x in 120..360 {
            mask.put_pixel(x, y, image::Luma([255]));
        }
    }
    let dir = scratch("region-mask");
    let path = dir.join("mask.png");
    mask.save(&path).unwrap();
    let by_mask = explain(&[
        "--method",
        "eigencam",
        "--region-mask",
        path.to_str().unwrap(),
    ]);
    for record in [&by_box, &by_mask] {
        assert_eq!(
            record["target"]["label"],
            "person logit summed over 14400 pixels"
        );
        assert!(
            close(&record["task"]["score"], expected),
            "{}",
            record["task"]["score"]
        );
    }
    assert_eq!(by_box["task"]["region"], by_mask["task"]["region"]);
    assert_eq!(by_box["cam"]["map"], by_mask["cam"]["map"]);
}

#[test]
fn segmenter_misuse_gets_one_clear_line() {
    let eval_out = scratch("segment-eval");
    let selfie = ["--model", "selfie", "--method", "eigencam"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["explain", ASTRONAUT];
        args.extend_from_slice(&selfie);
        args.extend_from_slice(extra);
        args
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "explain",
                "models/samples/rocket.jpg",
                "--model",
                "selfie",
                "--method",
                "eigencam",
            ],
            "finds nothing of its class in this image; give a region",
        ),
        (
            with(&["--region", "10,10,5,5"]),
            "needs finite x0 < x1 and y0 < y1",
        ),
        (with(&["--region", "1,2,3"]), "--region takes x0,y0,x1,y1"),
        (
            with(&["--region", "600,600,700,700"]),
            "the region holds no pixel",
        ),
        (
            with(&["--task", "detection"]),
            "`selfie` is a segmentation model but the explanation asks for detection",
        ),
        (
            vec![
                "explain",
                ASTRONAUT,
                "--method",
                "eigencam",
                "--region",
                "0,0,10,10",
            ],
            "choose a region of a segmenter's mask; `mobilenet_v2` is a classification model",
        ),
        (
            vec!["predict", ASTRONAUT, "--model", "selfie"],
            "is a segmenter",
        ),
        (
            vec![
                "eval",
                "--images",
                "models/samples",
                "--model",
                "selfie",
                "--methods",
                "eigencam",
                "--out",
                eval_out.to_str().unwrap(),
            ],
            "is a segmentation model: evaluation metrics score a classifier's class per image",
        ),
    ];
    fails_with_one_line(&cases);
}
