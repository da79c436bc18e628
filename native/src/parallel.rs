//! Using both (all) cores for inference: the core runs one plan on one thread; this module
//! decides how native callers spread work across cores.
//!
//! The strategy, chosen by `cargo bench -p camlime --bench inference` on a 2-core machine: batch-1
//! plans with the images divided between threads (plans are immutable and shared; each run has its
//! own state). One batch-16 plan ran 4× slower per image than batch-1 plans, and tract's own
//! intra-op thread pool gained only 18% on one image and lost 7% on 16.

use std::num::NonZeroUsize;

use anyhow::{Result, anyhow};
use camlime_core::Classifier;
use camlime_core::model::ForwardOutput;
use camlime_core::ndarray::{ArrayView4, Axis, concatenate};

/// The number of cores this process may use.
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Forward `input` with its images divided over `threads` threads; same results as one thread.
pub fn forward_split(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    layers: &[&str],
    threads: usize,
) -> Result<ForwardOutput> {
    let n = input.dim().0;
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 {
        return Ok(classifier.forward(input, layers)?);
    }
    let share = n.div_ceil(threads);
    let parts: Vec<ForwardOutput> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(share)
            .map(|start| {
                let part = input.slice_axis(Axis(0), (start..(start + share).min(n)).into());
                scope.spawn(move || classifier.forward(part, layers))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("an inference thread panicked"))?
                    .map_err(anyhow::Error::from)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let logits: Vec<_> = parts.iter().map(|p| p.logits.view()).collect();
    let logits = concatenate(Axis(0), &logits)?;
    let activations = (0..layers.len())
        .map(|i| {
            let views: Vec<_> = parts.iter().map(|p| p.activations[i].view()).collect();
            concatenate(Axis(0), &views)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ForwardOutput {
        logits,
        activations,
    })
}
