//! Using both (all) cores: a [`Threads`] runtime for the core's explainers and inference, with
//! an optional terminal progress bar, a cancel flag and a clock.
//!
//! The strategy, chosen by `cargo bench -p camlime --bench inference` on a 2-core machine: batch-1
//! plans with the images divided between threads (plans are immutable and shared; each run has its
//! own state). One batch-16 plan ran 4× slower per image than batch-1 plans, and tract's own
//! intra-op thread pool gained only 18% on one image and lost 7% on 16.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use camlime_core::Runtime;
use indicatif::{ProgressBar, ProgressStyle};

/// The number of cores this process may use.
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Receives `(stage, done, total)` progress reports (the server's jobs publish them).
pub type ProgressFn = Arc<dyn Fn(&str, usize, usize) + Send + Sync>;

/// Runs the core's chunks on up to `threads` scoped threads; results do not depend on the
/// thread count (the core fixes the chunks).
pub struct Threads {
    threads: usize,
    started: Instant,
    bar: Option<ProgressBar>,
    report: Option<ProgressFn>,
    cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threads")
            .field("threads", &self.threads)
            .field("cancelled", &self.cancelled())
            .finish_non_exhaustive()
    }
}

impl Threads {
    /// A runtime with `threads` workers (at least one).
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            started: Instant::now(),
            bar: None,
            report: None,
            cancel: Arc::default(),
        }
    }

    /// Report progress to `report` as well.
    pub fn with_progress(mut self, report: ProgressFn) -> Self {
        self.report = Some(report);
        self
    }

    /// Cancel when `flag` is set (by another thread: a client, a timeout, shutdown).
    pub fn with_cancel_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = flag;
        self
    }

    /// Show progress on stderr (hidden automatically when stderr is not a terminal).
    pub fn with_progress_bar(mut self) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        self.bar = Some(bar);
        self
    }

    /// The flag that cancels work when set.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Remove the progress bar from the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Runtime for Threads {
    fn threads(&self) -> usize {
        self.threads
    }

    fn map<R: Send>(&self, n: usize, f: &(dyn Fn(usize) -> R + Sync)) -> Vec<R> {
        let workers = self.threads.min(n);
        if workers <= 1 {
            return (0..n).map(f).collect();
        }
        let next = AtomicUsize::new(0);
        let mut indexed: Vec<(usize, R)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= n {
                                break done;
                            }
                            done.push((i, f(i)));
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        indexed.sort_by_key(|(i, _)| *i);
        indexed.into_iter().map(|(_, r)| r).collect()
    }

    fn progress(&self, stage: &str, done: usize, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_message(stage.to_owned());
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        if let Some(report) = &self.report {
            report(stage, done, total);
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn clock(&self) -> Option<Duration> {
        Some(self.started.elapsed())
    }
}
