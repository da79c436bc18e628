//! Segmenters at 224² on the chelsea base image (`cargo bench -p camlime --bench segment`).
//! scikit-image's times on the same image: `shared/tests/fixtures/segmentation/generate.py`
//! writes them to `timings.json` beside the fixtures.

#![allow(missing_docs, clippy::unwrap_used)]

use camlime::models::models_dir;
use camlime::parallel::{Threads, available_threads};
use camlime_core::{Runtime, SegmenterConfig};
use criterion::{Criterion, criterion_group, criterion_main};

fn segmenters(c: &mut Criterion) {
    let image = image::open(
        models_dir(None)
            .unwrap()
            .join("../shared/tests/fixtures/segmentation/chelsea.png"),
    )
    .unwrap()
    .to_rgb8();
    let mut group = c.benchmark_group("segment/224");
    group.sample_size(10);
    for name in ["quickshift", "slic", "felzenszwalb", "grid"] {
        let config = name.parse::<SegmenterConfig>().unwrap();
        group.bench_function(name, |b| b.iter(|| config.segment(&image, 0).unwrap()));
    }
    let threads = Threads::new(available_threads());
    let quickshift = SegmenterConfig::default();
    group.bench_function(format!("quickshift-{}-threads", threads.threads()), |b| {
        b.iter(|| quickshift.segment_with(&image, 0, &threads).unwrap())
    });
    group.finish();
}

criterion_group!(benches, segmenters);
criterion_main!(benches);
