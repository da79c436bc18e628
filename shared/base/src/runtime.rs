//! How explainers spend work: the core itself never spawns threads or reads a clock; a
//! [`Runtime`] lets the caller run independent chunks concurrently, watch progress and cancel.
//! [`Sequential`] is the core's own (and the browser worker's) runtime; native code supplies a
//! threaded one. Chunks are fixed by the work, not by the thread count, so results are identical
//! whatever runtime runs them.

use std::ops::Range;

use crate::{Error, Result};

/// Where and how explainer work runs.
pub trait Runtime: Sync {
    /// How many chunks may usefully run at once.
    fn threads(&self) -> usize {
        1
    }

    /// `f(0)`, …, `f(n − 1)`, possibly concurrently; results in index order.
    fn map<R: Send>(&self, n: usize, f: &(dyn Fn(usize) -> R + Sync)) -> Vec<R> {
        (0..n).map(f).collect()
    }

    /// `done` of `total` units of `stage` are finished.
    fn progress(&self, _stage: &str, _done: usize, _total: usize) {}

    /// Whether the caller wants the work abandoned (checked between chunks).
    fn cancelled(&self) -> bool {
        false
    }

    /// Time since some fixed instant, for stage timings; `None` where there is no clock.
    fn clock(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Everything on the calling thread, no progress reports, never cancelled.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sequential;

impl Runtime for Sequential {}

/// Fail with [`Error::Cancelled`] if the runtime asks to stop.
pub fn check_cancelled(runtime: &impl Runtime) -> Result<()> {
    if runtime.cancelled() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

/// `f` over `range` cut into one contiguous share per thread (the last share may be shorter);
/// results in range order.
pub fn map_shares<R: Send>(
    runtime: &impl Runtime,
    range: Range<usize>,
    f: &(dyn Fn(Range<usize>) -> R + Sync),
) -> Vec<R> {
    let n = range.len();
    let share = n.div_ceil(runtime.threads().clamp(1, n.max(1))).max(1);
    runtime.map(n.div_ceil(share), &|i| {
        let from = range.start + i * share;
        f(from..(from + share).min(range.end))
    })
}
