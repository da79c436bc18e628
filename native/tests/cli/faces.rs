//! A face model end to end: the emotion classifier sees the face its detector finds (cropped
//! with the margin), predicts and explains it, records the crop and replays it; misuse is one
//! clear line.

use serde_json::Value;

use crate::common::{camlime, fails_with_one_line, scratch, success};

const ASTRONAUT: &str = "models/samples/astronaut.png";

#[test]
fn the_face_is_cropped_predicted_explained_and_replayed() {
    let text = success(&["predict", ASTRONAUT, "--model", "emotion", "--top", "1"]);
    assert!(text.contains("happy"), "{text}");
    let out = scratch("explain-face");
    let text = success(&[
        "explain",
        ASTRONAUT,
        "--model",
        "emotion",
        "--method",
        "camlime",
        "--samples",
        "200",
        "--segmenter",
        "faces",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        text.contains(
            "face 0 of the 1 blazeface found (score 0.8846), cropped at (150, 52)–(299, 201)"
        ),
        "{text}"
    );
    assert!(text.contains("target: 3 happy"), "{text}");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("astronaut.camlime.json")).unwrap())
            .unwrap();
    assert_eq!(
        record["image"]["face"]["crop"],
        serde_json::json!({"x0": 150, "y0": 52, "x1": 299, "y1": 201})
    );
    assert_eq!(record["config"]["segmenter"]["algorithm"], "slic");
    assert_eq!(
        (
            record["image"]["width"].clone(),
            record["image"]["height"].clone()
        ),
        (64.into(), 64.into())
    );
    let replay = camlime(&[
        "explain",
        "--replay",
        out.join("astronaut.camlime.json").to_str().unwrap(),
        "--out",
        out.join("replay").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8(replay.stderr).unwrap();
    assert!(replay.status.success(), "{stderr}");
    assert!(stderr.contains("reproduced"), "{stderr}");
}

#[test]
fn identity_is_the_similarity_to_a_reference_face() {
    let dir = scratch("identity");
    let mirrored = dir.join("astronaut_mirrored.png");
    image::imageops::flip_horizontal(
        &image::open(crate::common::repo(ASTRONAUT))
            .unwrap()
            .to_rgb8(),
    )
    .save(&mirrored)
    .unwrap();
    let text = success(&[
        "explain",
        ASTRONAUT,
        "--model",
        "faceres",
        "--method",
        "gradcam",
        "--reference",
        mirrored.to_str().unwrap(),
        "--out",
        dir.join("out").to_str().unwrap(),
    ]);
    // The reference's similarity in shared/tests/fixtures/faces/faces.json: 0.95748.
    assert!(
        text.contains(
            "cosine similarity of the face's 1024-d embedding to the reference face's = 0.9575"
        ),
        "{text}"
    );
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("out/astronaut.gradcam.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["task"]["kind"], "identity");
    assert_eq!(
        record["config"]["task"]["reference"]
            .as_array()
            .unwrap()
            .len(),
        1024
    );
    let cat = success(&[
        "explain",
        ASTRONAUT,
        "--model",
        "faceres",
        "--method",
        "eigencam",
        "--reference",
        "models/samples/chelsea.png",
        "--out",
        dir.join("cat").to_str().unwrap(),
    ]);
    assert!(cat.contains("reference face's = 0.18"), "{cat}");
}

#[test]
fn face_misuse_gets_one_clear_line() {
    let cases: [(&[&str], &str); 7] = [
        (
            &[
                "explain",
                "models/samples/rocket.jpg",
                "--model",
                "emotion",
                "--method",
                "gradcam",
            ],
            "`emotion` explains faces: invalid parameter: the model detects no face above its score threshold",
        ),
        (
            &[
                "explain", ASTRONAUT, "--model", "emotion", "--method", "gradcam", "--face", "1",
            ],
            "box 1 is out of range: 1 detection",
        ),
        (
            &["explain", ASTRONAUT, "--method", "gradcam", "--face", "0"],
            "--face chooses the face a face model explains; `mobilenet_v2` is not one",
        ),
        (
            &["predict", "models/samples/rocket.jpg", "--model", "emotion"],
            "detects no face",
        ),
        (
            &[
                "explain", ASTRONAUT, "--model", "faceres", "--method", "gradcam",
            ],
            "`faceres` is an embedding model but the explanation asks for classification (explain its similarity to a reference face",
        ),
        (
            &[
                "explain",
                ASTRONAUT,
                "--method",
                "gradcam",
                "--reference",
                ASTRONAUT,
            ],
            "--reference compares faces; `mobilenet_v2` is a classification model",
        ),
        (
            &[
                "explain",
                ASTRONAUT,
                "--model",
                "faceres",
                "--method",
                "gradcam",
                "--reference",
                "models/samples/rocket.jpg",
            ],
            "the reference models/samples/rocket.jpg: `faceres` explains faces: invalid parameter: the model detects no face",
        ),
    ];
    fails_with_one_line(&cases);
}
