//! Metrics against Quantus 0.5.3 (fixtures: `fixtures/metrics/generate.py`): the same inputs,
//! attributions, masks and random draws; the model's outputs replayed from PyTorch for every
//! input Quantus fed it, looked up by a hash of the input's bits, so a perturbation that
//! differs from Quantus's by one bit is a miss and fails the test. Every score and curve must
//! agree within 1e-6 relative (probabilities: 1e-6 of their scale, see `close`). ROAD's imputed inputs come from different sparse solvers
//! (SuperLU there, conjugate gradients here) and go through the bundled model instead; its
//! 0/1 outcomes must be equal.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::common::{bundled, fixture, npy};
use camlime_core::metrics::{Explainer, Forward, Instance, Metric, Model, Outcome};
use camlime_core::ndarray::{Array2, Array3, ArrayView4, Axis, Ix2, Ix4};
use camlime_core::{Classifier, Result, Sequential};
use serde_json::Value;

/// splitmix64 draw `i` (from 1) of the stream seeded `seed`, as `metrics::Draws`.
fn splitmix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The fixture's hash of a float32 tensor's bits.
fn row_hash(values: &[f32]) -> u64 {
    values.iter().enumerate().fold(0u64, |h, (i, v)| {
        let key = splitmix(0x5EED, i as u64 + 1) | 1;
        h.wrapping_add(u64::from(v.to_bits()).wrapping_add(1).wrapping_mul(key))
    })
}

/// PyTorch's logits for the inputs Quantus used; anything else goes to the bundled model and
/// is counted as a miss.
struct Replay<'a> {
    recorded: Mutex<HashMap<u64, usize>>,
    logits: Array2<f32>,
    fallback: Forward<'a, Sequential>,
    misses: Mutex<usize>,
}

impl Model for Replay<'_> {
    fn logits(&self, inputs: ArrayView4<f32>) -> Result<Array2<f32>> {
        let mut out = Array2::zeros((inputs.dim().0, self.logits.ncols()));
        for (i, input) in inputs.axis_iter(Axis(0)).enumerate() {
            let values: Vec<f32> = input.iter().copied().collect();
            let found = self
                .recorded
                .lock()
                .unwrap()
                .get(&row_hash(&values))
                .copied();
            let row = match found {
                Some(row) => self.logits.row(row).to_owned(),
                None => {
                    *self.misses.lock().unwrap() += 1;
                    self.fallback
                        .logits(input.insert_axis(Axis(0)))?
                        .row(0)
                        .to_owned()
                }
            };
            out.row_mut(i).assign(&row);
        }
        Ok(out)
    }
}

/// The fixture's toy explainer: x[t mod 3] · x[(t + 1) mod 3].
struct Toy;

impl Explainer for Toy {
    fn maps(&self, inputs: ArrayView4<f32>, targets: &[usize]) -> Result<Array3<f32>> {
        let (n, _, h, w) = inputs.dim();
        Ok(Array3::from_shape_fn((n, h, w), |(i, r, c)| {
            let t = targets[i];
            inputs[(i, t % 3, r, c)] * inputs[(i, (t + 1) % 3, r, c)]
        }))
    }

    fn shifted(&self, _shift: f32) -> Result<Box<dyn Explainer + '_>> {
        Ok(Box::new(Toy))
    }
}

/// Within 1e-6 relative; values in probability units (softmax outputs and their differences)
/// within 1e-6 of the probability scale, since PyTorch's float32 softmax (vectorised exp,
/// multiplied by the sum's reciprocal) rounds in ways no other implementation repeats.
fn close(ours: f64, reference: f64, scale: f64) -> bool {
    (ours.is_nan() && reference.is_nan())
        || (ours - reference).abs() <= 1e-6 * reference.abs().max(scale) + 1e-12
}

#[test]
fn metrics_match_quantus() {
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("metrics/summary.json")).unwrap())
            .unwrap();
    let classifier: Classifier = bundled("mobilenet_v2");
    let replay = Replay {
        recorded: Mutex::default(),
        logits: npy("metrics/logits.npy")
            .into_dimensionality::<Ix2>()
            .unwrap(),
        fallback: Forward {
            classifier: &classifier,
            runtime: &Sequential,
        },
        misses: Mutex::new(0),
    };
    let seed = summary["seed"].as_u64().unwrap();
    let images: Vec<String> = summary["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let targets: Vec<usize> = summary["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let inputs: Vec<Array3<f32>> = images
        .iter()
        .map(|name| {
            npy(&format!("reference/mobilenet_v2/{name}.input.npy"))
                .into_dimensionality::<Ix4>()
                .unwrap()
                .index_axis_move(Axis(0), 0)
        })
        .collect();
    let attributions: Vec<Array2<f32>> = images
        .iter()
        .map(|name| {
            npy(&format!("metrics/{name}.attribution.npy"))
                .into_dimensionality::<Ix2>()
                .unwrap()
        })
        .collect();
    let bounds: Vec<usize> = summary["mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mask = Array2::from_shape_fn((224, 224), |(r, c)| {
        (bounds[0]..bounds[1]).contains(&r) && (bounds[2]..bounds[3]).contains(&c)
    });
    let mut failures = Vec::new();
    for case in summary["cases"].as_array().unwrap() {
        let name = case["metric"].as_str().unwrap();
        let metric = Metric::parse(name, &case["params"]).unwrap();
        let misses_before = *replay.misses.lock().unwrap();
        let mut outcomes: Vec<Outcome> = (0..images.len())
            .map(|i| {
                *replay.recorded.lock().unwrap() = case["replay"][i]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|pair| {
                        let hash = pair[0].as_str().unwrap().parse().unwrap();
                        (hash, pair[1].as_u64().unwrap() as usize)
                    })
                    .collect();
                let instance = Instance {
                    input: inputs[i].view(),
                    target: targets[i],
                    attribution: attributions[i].view(),
                    mask: Some(mask.view()),
                };
                metric
                    .evaluate(&instance, &replay, Some(&Toy), seed)
                    .unwrap()
            })
            .collect();
        metric.finish(&mut outcomes);
        let misses = *replay.misses.lock().unwrap() - misses_before;
        for (i, (outcome, expected)) in outcomes
            .iter()
            .zip(case["values"].as_array().unwrap())
            .enumerate()
        {
            let expected: Vec<f64> = expected
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect();
            let ours = if expected.len() == 1 {
                vec![outcome.score]
            } else {
                outcome.curve.clone()
            };
            let scale = if metric.params()["softmax"] == Value::Bool(true) {
                1.0
            } else {
                0.0
            };
            let agree = ours.len() == expected.len()
                && ours
                    .iter()
                    .zip(&expected)
                    .all(|(a, b)| close(*a, *b, scale));
            eprintln!(
                "{name} {} [{}]: ours {:?} quantus {:?}{}",
                case["params"],
                images[i],
                &ours[..ours.len().min(4)],
                &expected[..expected.len().min(4)],
                if agree { "" } else { "  <-- differs" }
            );
            if !agree {
                failures.push(format!("{name} {} on {}", case["params"], images[i]));
            }
        }
        if misses > 0 && name != "ROAD" {
            failures.push(format!(
                "{name} {}: {misses} inputs differ from Quantus's",
                case["params"]
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn chelsea() -> Array3<f32> {
    npy("reference/mobilenet_v2/chelsea.input.npy")
        .into_dimensionality::<Ix4>()
        .unwrap()
        .index_axis_move(Axis(0), 0)
}

#[test]
fn edited_models_shift_their_input_and_reinitialise_layers() {
    let classifier = bundled("mobilenet_v2");
    let x = chelsea();
    let original = classifier
        .forward(x.view().insert_axis(Axis(0)), &[])
        .unwrap()
        .logits;
    let shifted = classifier.with_input_offset(-1.0).unwrap();
    let moved = x.mapv(|v| v - 1.0);
    let through = shifted
        .forward(moved.view().insert_axis(Axis(0)), &[])
        .unwrap()
        .logits;
    let gap = original
        .iter()
        .zip(&through)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(gap < 1e-4, "shifted model differs by {gap}");

    // 52 convolutions, 52 batch norms and the classifier, named as PyTorch's modules: the
    // layers Quantus's MPRT resets, in the same order.
    let layers = classifier.parameter_layers();
    assert_eq!(layers.len(), 105, "{layers:?}");
    assert_eq!(&layers[..2], ["features.0.0", "features.0.1"]);
    let last = layers.last().unwrap().clone();
    let random = classifier
        .with_randomised_layers(std::slice::from_ref(&last), 42)
        .unwrap();
    let logits = random
        .forward(x.view().insert_axis(Axis(0)), &[])
        .unwrap()
        .logits;
    let change = original
        .iter()
        .zip(&logits)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        change > 0.1,
        "re-initialising {last} changed the logits by {change}"
    );
    let again = classifier.with_randomised_layers(&[last], 42).unwrap();
    let same = again
        .forward(x.view().insert_axis(Axis(0)), &[])
        .unwrap()
        .logits;
    assert_eq!(logits, same, "the re-initialisation is seeded");
    assert!(
        classifier
            .with_randomised_layers(&["nope".into()], 1)
            .is_err()
    );
}

#[test]
fn mprt_and_input_invariance_with_a_real_method() {
    use camlime_core::ExplainConfig;
    use camlime_core::cam::CamMethod;
    use camlime_core::metrics::{MethodExplainer, Mprt, method_map, mprt};
    let classifier = bundled("mobilenet_v2");
    let x = chelsea();
    let config = ExplainConfig::default();
    let saliency = CamMethod::Saliency;
    let target = 285;
    let a = method_map(
        &classifier,
        x.view(),
        target,
        saliency,
        &config,
        &Sequential,
    )
    .unwrap();
    let instance = Instance {
        input: x.view(),
        target,
        attribution: a.view(),
        mask: None,
    };
    let layers = classifier.parameter_layers();
    let last_two = &layers[layers.len() - 2..];
    let metric = Mprt::default();
    let outcome = mprt(&metric, &instance, last_two, &mut |set| {
        let model = if set.is_empty() {
            None
        } else {
            Some(classifier.with_randomised_layers(set, metric.seed).unwrap())
        };
        method_map(
            model.as_ref().unwrap_or(&classifier),
            x.view(),
            target,
            saliency,
            &config,
            &Sequential,
        )
    })
    .unwrap();
    eprintln!("MPRT curve {:?}", outcome.curve);
    assert!(
        (outcome.curve[0] - 1.0).abs() < 1e-9,
        "the original model explains alike"
    );
    assert!(
        outcome.curve[1..].iter().all(|&s| s < 0.99),
        "{:?}",
        outcome.curve
    );

    let explainer = MethodExplainer {
        classifier: &classifier,
        method: saliency,
        config: config.clone(),
        runtime: &Sequential,
    };
    let forward = Forward {
        classifier: &classifier,
        runtime: &Sequential,
    };
    // Float32 rounding of (x + s) − s moves gradient maps by ~0.5 % of their maximum (0.37
    // here), so the comparison allows 1e-2.
    let invariance = Metric::parse("InputInvariance", &serde_json::json!({"atol": 1e-2})).unwrap();
    let score = invariance
        .evaluate(&instance, &forward, Some(&explainer), 0)
        .unwrap()
        .score;
    assert_eq!(
        score, 1.0,
        "Saliency is invariant to a shift its model absorbs"
    );
    let times_input = MethodExplainer {
        classifier: &classifier,
        method: CamMethod::InputXGradient,
        config,
        runtime: &Sequential,
    };
    let a = method_map(
        &classifier,
        x.view(),
        target,
        times_input.method,
        &times_input.config,
        &Sequential,
    )
    .unwrap();
    let instance = Instance {
        attribution: a.view(),
        ..instance
    };
    let score = invariance
        .evaluate(&instance, &forward, Some(&times_input), 0)
        .unwrap()
        .score;
    assert_eq!(score, 0.0, "Input × Gradient is not");
}
