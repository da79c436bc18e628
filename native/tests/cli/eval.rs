//! `camlime eval` end to end: tables, per-image results, curve plots, resuming an interrupted
//! run, localisation with masks, and clear errors for bad requests.

use std::path::Path;

use crate::common::{camlime, repo, scratch};
use serde_json::Value;

fn images(dir: &Path) -> String {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for name in ["chelsea.png", "coffee.png"] {
        std::fs::copy(repo(&format!("models/samples/{name}")), images.join(name)).unwrap();
    }
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    images.to_string_lossy().into_owned()
}

fn run(args: &[&str]) -> (bool, String, String) {
    let output = camlime(args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn rows(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn eval_writes_tables_curves_and_resumes() {
    let dir = scratch("eval");
    let images = images(&dir);
    let out = dir.join("out");
    let params = dir.join("params.json");
    std::fs::write(
        &params,
        r#"{"FaithfulnessCorrelation": {"nr_runs": 10}, "PixelFlipping": {"features_in_step": 6272}}"#,
    )
    .unwrap();
    let args = [
        "eval",
        "--images",
        &images,
        "--methods",
        "gradcam,camlime",
        "--samples",
        "50",
        "--metrics",
        "FaithfulnessCorrelation,PixelFlipping,Sparseness,MaxSensitivity",
        "--metric-params",
        params.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("(16 computed now)"), "{stdout}");
    assert!(
        stdout.contains("| Grad-CAM |") && stdout.contains("| CamLIME |"),
        "{stdout}"
    );
    let first = rows(&out);
    assert_eq!(first.len(), 16);
    // MaxSensitivity re-explains noisy tensors, which CamLIME (an image explanation) cannot:
    // recorded as an error, shown as n/a, the rest computed.
    let unsupported: Vec<_> = first.iter().filter(|r| !r["error"].is_null()).collect();
    assert_eq!(unsupported.len(), 2);
    assert!(
        unsupported
            .iter()
            .all(|r| r["method"] == "camlime" && r["metric"] == "MaxSensitivity")
    );
    let pf = first
        .iter()
        .find(|r| r["method"] == "gradcam" && r["metric"] == "PixelFlipping")
        .unwrap();
    assert_eq!(
        pf["curve"].as_array().unwrap().len(),
        8,
        "50176 pixels in steps of 6272"
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let cell = summary
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == "gradcam" && c["metric"] == "Sparseness")
        .unwrap();
    assert_eq!(cell["n"], 2);
    let sparseness = cell["mean"].as_f64().unwrap();
    assert!(sparseness > 0.0 && sparseness < 1.0, "{sparseness}");
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 4);
    assert!(
        std::fs::read_to_string(out.join("summary.md"))
            .unwrap()
            .contains("n/a")
    );
    let svg = std::fs::read_to_string(out.join("curves/PixelFlipping.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("CamLIME"));
    assert!(image::open(out.join("curves/PixelFlipping.png")).is_ok());

    // Run again: nothing to do, the same table.
    let (ok, again, _) = run(&args);
    assert!(ok && again.contains("(0 computed now)"), "{again}");
    assert_eq!(
        again.lines().skip(1).collect::<Vec<_>>(),
        stdout.lines().skip(1).collect::<Vec<_>>()
    );

    // Interrupted mid-line: the cut line and the rows after it are redone, identically.
    let text = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let kept: Vec<&str> = text.lines().take(11).collect();
    std::fs::write(
        out.join("results.jsonl"),
        kept.join("\n") + "\n{\"image\":\"coffee.p",
    )
    .unwrap();
    let (ok, resumed, stderr) = run(&args);
    assert!(ok, "{stderr}");
    assert!(resumed.contains("(5 computed now)"), "{resumed}");
    assert!(stderr.contains("line 12 skipped"), "{stderr}");
    let second = rows(&out);
    assert_eq!(second.len(), 16);
    for row in &first {
        let same = second.iter().find(|r| {
            r["image"] == row["image"]
                && r["method"] == row["method"]
                && r["metric"] == row["metric"]
        });
        assert_eq!(same.unwrap()["score"], row["score"], "{row}");
    }

    // Other settings in the same folder are refused, each named: the metrics chosen, an
    // explanation setting, a metric parameter, the model, an image's bytes.
    let refused = |changed: &[&str], named: &str| {
        let mut changed_args: Vec<&str> = args.to_vec();
        for pair in changed.chunks(2) {
            match changed_args.iter().position(|a| *a == pair[0]) {
                Some(at) => changed_args[at + 1] = pair[1],
                None => changed_args.extend(pair),
            }
        }
        let (ok, _, stderr) = run(&changed_args);
        assert!(
            !ok && stderr.contains("holds a run with other settings") && stderr.contains(named),
            "{changed:?}: {stderr}"
        );
    };
    refused(
        &[
            "--metrics",
            "FaithfulnessCorrelation,PixelFlipping,Sparseness",
        ],
        "metric.MaxSensitivity.metric: \"MaxSensitivity\" → unset",
    );
    refused(
        &["--layer", "features.16"],
        "explanation.gradcam.cam.layers: [] → [\"features.16\"]",
    );
    refused(
        &["--samples", "60"],
        "explanation.camlime.lime.num_samples: 50 → 60",
    );
    let other_params = dir.join("other-params.json");
    std::fs::write(
        &other_params,
        r#"{"FaithfulnessCorrelation": {"nr_runs": 11}, "PixelFlipping": {"features_in_step": 6272}}"#,
    )
    .unwrap();
    refused(
        &["--metric-params", other_params.to_str().unwrap()],
        "metric.FaithfulnessCorrelation.nr_runs: 10 → 11",
    );
    refused(&["--model", "efficientnet_lite0"], "model.sha256: ");
    let coffee = Path::new(&images).join("coffee.png");
    let original = std::fs::read(&coffee).unwrap();
    std::fs::copy(repo("models/samples/chelsea.png"), &coffee).unwrap();
    refused(&[], "image coffee.png: other bytes");
    std::fs::write(&coffee, original).unwrap();
    assert_eq!(rows(&out).len(), 16, "nothing computed by the refused runs");

    // A folder from another version (or no run at all) is refused too.
    std::fs::write(
        out.join("run.json"),
        r#"{"model": "mobilenet_v2", "samples": 50}"#,
    )
    .unwrap();
    let (ok, _, stderr) = run(&args);
    assert!(
        !ok && stderr.contains("another camlime version"),
        "{stderr}"
    );
}

#[test]
fn localisation_uses_masks() {
    let dir = scratch("eval-masks");
    let images = images(&dir);
    let masks = dir.join("masks");
    std::fs::create_dir_all(&masks).unwrap();
    for name in ["chelsea", "coffee"] {
        let size = image::open(repo(&format!("models/samples/{name}.png"))).unwrap();
        let (w, h) = (size.width(), size.height());
        let mask = image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([
                if x > w / 4 && x < 3 * w / 4 && y > h / 4 && y < 3 * h / 4 {
                    255
                } else {
                    0
                },
            ])
        });
        mask.save(masks.join(format!("{name}.png"))).unwrap();
    }
    let out = dir.join("out");
    let args = [
        "eval",
        "--images",
        &images,
        "--methods",
        "gradcam",
        "--metrics",
        "PointingGame,RelevanceMassAccuracy,AUC",
        "--masks",
        masks.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stderr}");
    let rows = rows(&out);
    assert_eq!(rows.len(), 6, "{stdout}");
    for row in &rows {
        let score = row["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{row}");
    }
    let auc: Vec<f64> = rows
        .iter()
        .filter(|r| r["metric"] == "AUC")
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(
        auc.iter().all(|&a| a > 0.5),
        "Grad-CAM looks at the centre of these photos: {auc:?}"
    );

    // A changed mask is refused; a new image with its mask is resumed (only its rows computed).
    let chelsea_mask = masks.join("chelsea.png");
    let original = std::fs::read(&chelsea_mask).unwrap();
    std::fs::copy(masks.join("coffee.png"), &chelsea_mask).unwrap();
    let (ok, _, stderr) = run(&args);
    assert!(
        !ok && stderr.contains("mask chelsea.png: other bytes"),
        "{stderr}"
    );
    std::fs::write(&chelsea_mask, original).unwrap();
    std::fs::copy(
        repo("models/samples/chelsea.png"),
        Path::new(&images).join("chelsea-again.png"),
    )
    .unwrap();
    std::fs::copy(masks.join("chelsea.png"), masks.join("chelsea-again.png")).unwrap();
    let (ok, stdout, stderr) = run(&args);
    assert!(
        ok && stdout.contains("(3 computed now)"),
        "{stdout}{stderr}"
    );
}

#[test]
fn bad_requests_fail_clearly() {
    let dir = scratch("eval-bad");
    let images = images(&dir);
    let out = dir.join("out");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--metrics", "Faithfulnes"],
            "unknown metric `Faithfulnes`",
        ),
        (&["--metrics", "PointingGame"], "needs ground-truth masks"),
        (&["--methods", "gradcma"], "unknown method `gradcma`"),
        (
            &[
                "--metrics",
                "FaithfulnessCorrelation",
                "--metric-params",
                "/nonexistent.json",
            ],
            "cannot read /nonexistent.json",
        ),
        (
            &["--metrics", "PixelFlipping", "--metric-params", "-"],
            "cannot read -",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec!["eval", "--images", &images, "--out", out];
        args.extend_from_slice(extra);
        let (ok, _, stderr) = run(&args);
        assert!(!ok, "{extra:?} should fail");
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
        // One line, and for a value the flag's parser refused, clap's pointer to `--help`.
        let lines = stderr
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("For more information"));
        assert_eq!(lines.count(), 1, "{stderr}");
    }
    let params = dir.join("p.json");
    std::fs::write(&params, r#"{"PixelFlipping": {"features_in_stepp": 3}}"#).unwrap();
    let (ok, _, stderr) = run(&[
        "eval",
        "--images",
        &images,
        "--out",
        out,
        "--metrics",
        "PixelFlipping",
        "--metric-params",
        params.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("unknown field `features_in_stepp`"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&[
        "eval",
        "--images",
        dir.join("nothing").to_str().unwrap(),
        "--out",
        out,
    ]);
    assert!(
        !ok && stderr.contains("cannot read the image folder"),
        "{stderr}"
    );
}
