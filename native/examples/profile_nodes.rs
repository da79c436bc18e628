//! Where tract spends its time: the optimised plan of an ONNX model at batch 1, timed node by
//! node and summed per operator kind (median-free mean over 30 runs after 3 warm-ups).
//!
//! `cargo run --release -p camlime --example profile_nodes -- models/mobilenet_v2.onnx [SIZE]
//! [--gradient input|LAYER]`: with `--gradient`, the backward transform's model (logits plus the
//! gradient with respect to the input or a layer) instead of the forward plan.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Instant;

use tract_onnx::prelude::*;

const WARM_UP: usize = 3;
const RUNS: usize = 30;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: profile_nodes MODEL.onnx [SIZE]");
    let size: usize = args
        .next()
        .map_or(224, |s| s.parse().expect("SIZE is a number"));
    let gradient = match (args.next().as_deref(), args.next()) {
        (Some("--gradient"), Some(target)) => Some(target),
        (None, _) => None,
        _ => panic!("expected --gradient input|LAYER"),
    };
    let onnx = tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(true);
    let image = InferenceFact::dt_shape(f32::datum_type(), tvec!(1, 3, size, size));
    let input: Tensor = tract_ndarray::Array4::<f32>::from_elem((1, 3, size, size), 0.5).into();
    let (model, inputs) = match gradient {
        None => (onnx.model_for_path(&path).unwrap(), tvec![input.into()]),
        Some(target) => {
            let bytes = std::fs::read(&path).unwrap();
            let mut spec = camlime_core::ModelSpec::user_model("profiled");
            spec.input_size = [size as u32; 2];
            let classifier = camlime_core::Classifier::new(&bytes, spec).unwrap();
            let classes = classifier.num_classes();
            let augmented = if target == "input" {
                classifier.gradient_model(&[], true, Default::default())
            } else {
                classifier.gradient_model(&[&target], false, Default::default())
            }
            .unwrap();
            let mut seed = tract_ndarray::Array2::<f32>::zeros((1, classes));
            seed[(0, 0)] = 1.0;
            let model = onnx
                .model_for_proto_model(&augmented.proto)
                .and_then(|m| {
                    m.with_input_fact(
                        1,
                        InferenceFact::dt_shape(f32::datum_type(), tvec!(1, classes)),
                    )
                })
                .and_then(|m| m.with_outputs_by_name(&augmented.outputs))
                .unwrap();
            (model, tvec![input.into(), Tensor::from(seed).into()])
        }
    };
    let plan = model
        .with_input_fact(0, image)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap();
    let mut per_op: HashMap<String, (f64, usize)> = HashMap::new();
    for run in 0..WARM_UP + RUNS {
        let mut state = plan.spawn().unwrap();
        state
            .run_plan_with_eval(inputs.clone(), |ctx, op_state, node, inputs| {
                let start = Instant::now();
                let outputs = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                if run >= WARM_UP {
                    let entry = per_op.entry(node.op.name().to_string()).or_default();
                    entry.0 += start.elapsed().as_secs_f64() * 1000.0 / RUNS as f64;
                    entry.1 += 1;
                }
                outputs
            })
            .unwrap();
    }
    let mut rows: Vec<_> = per_op.into_iter().collect();
    rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    println!(
        "{path}: {:.2} ms per image",
        rows.iter().map(|r| r.1.0).sum::<f64>()
    );
    for (op, (ms, count)) in rows {
        println!("{op:40} {ms:7.2} ms  ({} nodes)", count / RUNS);
    }
}
