//! Inference speed of the bundled models per image, on every engine (the lowered CNN plan `cnn`,
//! and `tract`), at batch 1, 16 and 64, on one thread and on every core (images split over the
//! threads, one plan per thread), then onnxruntime on the same machine when it is installed.
//!
//! `cargo bench -p camlime --bench inference`. The onnxruntime figures come from
//! `native/benches/onnxruntime_reference.py` (tooling: `pip install onnxruntime numpy`), run at
//! the end of the same process so the three engines are measured side by side.

#![allow(missing_docs, clippy::unwrap_used)]

use camlime::models::{Bundle, models_dir};
use camlime::parallel::{Threads, available_threads};
use camlime_core::engine::EngineChoice;
use camlime_core::ndarray::Array4;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn inference(c: &mut Criterion) {
    let bundle = Bundle::open(&models_dir(None).unwrap()).unwrap();
    let cores = available_threads();
    for name in ["mobilenet_v2", "efficientnet_lite0"] {
        let mut group = c.benchmark_group(format!("forward/{name}"));
        group.sample_size(10);
        for engine in ["cnn", "tract"] {
            for threads in [1, cores] {
                let pool = Threads::new(threads);
                for batch in [1usize, 16, 64] {
                    let input =
                        Array4::<f32>::from_shape_fn((batch, 3, 224, 224), |(n, c, y, x)| {
                            ((n + c + y * x) % 7) as f32 * 0.3 - 1.0
                        });
                    let classifier = bundle
                        .load(name)
                        .unwrap()
                        .on_engine(&EngineChoice::Named(engine.into()))
                        .unwrap()
                        .classifier
                        // tract's batch-16 plans ran ~4× slower per image than batch-1 ones.
                        .with_batch_size(if engine == "tract" {
                            1
                        } else {
                            batch.div_ceil(threads)
                        })
                        .unwrap();
                    classifier.forward_with(&pool, input.view(), &[]).unwrap();
                    group.throughput(Throughput::Elements(batch as u64));
                    group.bench_with_input(
                        BenchmarkId::new(format!("{engine}/{threads}-threads"), batch),
                        &input,
                        |b, input| {
                            b.iter(|| classifier.forward_with(&pool, input.view(), &[]).unwrap())
                        },
                    );
                }
            }
        }
        group.finish();
    }
    onnxruntime();
}

/// onnxruntime's figures from the reference script, or why there are none.
fn onnxruntime() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/onnxruntime_reference.py"
    );
    let output = std::process::Command::new("python3")
        .arg(script)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output();
    match output {
        Ok(output) if output.status.success() => {
            print!("{}", String::from_utf8_lossy(&output.stdout));
        }
        Ok(output) => println!(
            "onnxruntime reference not run (pip install onnxruntime numpy): {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!("onnxruntime reference not run: python3: {e}"),
    }
}

criterion_group!(benches, inference);
criterion_main!(benches);
