//! The core's integration tests as one binary: every test binary links tract (about 100 MB and a
//! link step apiece), so the files are modules of one test crate. Fixtures: `shared/tests/fixtures/`.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

mod architectures;
mod attribution;
mod cam;
mod classifier;
mod corpus;
mod decode;
mod detection;
mod endtoend;
mod faces;
mod grad;
mod grad_ops;
mod gradcam;
mod lime;
mod metrics;
mod phases;
mod reference;
mod render;
mod segmentation;
mod selfie;
