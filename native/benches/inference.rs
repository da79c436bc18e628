//! Inference speed of the bundled models per image: batch 1 and 16, one thread and every core.
//!
//! `cargo bench -p camlime --bench inference`. Compare with onnxruntime on the same machine:
//! `python3 native/benches/onnxruntime_reference.py`.

#![allow(missing_docs, clippy::unwrap_used)]

use camlime::models::{Bundle, models_dir};
use camlime::parallel::{Threads, available_threads};
use camlime_core::ndarray::Array4;
use camlime_core::runtime;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn inference(c: &mut Criterion) {
    let bundle = Bundle::open(&models_dir(None).unwrap()).unwrap();
    let threads = available_threads();
    let pool = Threads::new(threads);
    for name in ["mobilenet_v2", "efficientnet_lite0"] {
        let mut group = c.benchmark_group(format!("forward/{name}"));
        group.sample_size(10);
        for batch in [1usize, 16] {
            let input = Array4::<f32>::from_shape_fn((batch, 3, 224, 224), |(n, c, y, x)| {
                ((n + c + y * x) % 7) as f32 * 0.3 - 1.0
            });
            group.throughput(Throughput::Elements(batch as u64));
            let single = bundle
                .load(name)
                .unwrap()
                .classifier
                .with_batch_size(batch)
                .unwrap();
            single.forward(input.view(), &[]).unwrap();
            group.bench_with_input(BenchmarkId::new("1-thread", batch), &input, |b, input| {
                b.iter(|| single.forward(input.view(), &[]).unwrap());
            });
            group.bench_with_input(
                BenchmarkId::new(format!("{threads}-threads-intra"), batch),
                &input,
                |b, input| {
                    b.iter(|| {
                        with_intra_op_threads(threads, || {
                            single.forward(input.view(), &[]).unwrap()
                        })
                    });
                },
            );
            if batch >= threads {
                let split = bundle
                    .load(name)
                    .unwrap()
                    .classifier
                    .with_batch_size(batch / threads)
                    .unwrap();
                runtime::forward(&pool, &split, input.view(), &[]).unwrap();
                group.bench_with_input(
                    BenchmarkId::new(format!("{threads}-threads-split"), batch),
                    &input,
                    |b, input| {
                        b.iter(|| runtime::forward(&pool, &split, input.view(), &[]).unwrap());
                    },
                );
                let per_image = bundle.load(name).unwrap().classifier;
                runtime::forward(&pool, &per_image, input.view(), &[]).unwrap();
                group.bench_with_input(
                    BenchmarkId::new(format!("{threads}-threads-split-batch1"), batch),
                    &input,
                    |b, input| {
                        b.iter(|| runtime::forward(&pool, &per_image, input.view(), &[]).unwrap());
                    },
                );
            }
        }
        group.finish();
    }
}

/// Run `f` with tract's matrix products spread over `threads` threads (the strategy we measured
/// against and did not choose: see `camlime::parallel`).
fn with_intra_op_threads<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    tract_linalg::multithread::multithread_tract_scope(
        tract_linalg::multithread::Executor::multithread(threads),
        f,
    )
}

criterion_group!(benches, inference);
criterion_main!(benches);
