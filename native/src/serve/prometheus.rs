//! `/metrics` in the Prometheus text format (prometheus-client): requests by route and status,
//! request latency, jobs by outcome, and at scrape time jobs by state and resident memory.

use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::jobs::{JobCounts, Status};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    status: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// The server's Prometheus families (what `/metrics` reports).
pub struct Telemetry {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    jobs_finished: Family<OutcomeLabels, Counter>,
    jobs: Family<StateLabels, Gauge>,
    resident: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("camlime");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let jobs_finished = Family::<OutcomeLabels, Counter>::default();
        let jobs = Family::<StateLabels, Gauge>::default();
        let resident = Gauge::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request (until the response head; streams excluded)",
            latency.clone(),
        );
        registry.register(
            "jobs_finished",
            "Jobs finished, by status and error code",
            jobs_finished.clone(),
        );
        registry.register("jobs", "Jobs by state", jobs.clone());
        registry.register(
            "resident_memory_bytes",
            "Resident memory of the server process",
            resident.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            latency,
            jobs_finished,
            jobs,
            resident,
        }
    }
}

impl Telemetry {
    /// Count a finished job.
    pub fn job_finished(&self, status: Status, code: Option<&str>) {
        let status = serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.jobs_finished
            .get_or_create(&OutcomeLabels {
                status,
                code: code.unwrap_or("").to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the gauges read now.
    pub fn encode(&self, counts: JobCounts) -> String {
        for (state, n) in [
            ("queued", counts.queued),
            ("running", counts.running),
            ("finished", counts.finished),
        ] {
            self.jobs
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.resident
            .set(i64::try_from(resident_memory_bytes().unwrap_or(0)).unwrap_or(i64::MAX));
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Resident memory from `/proc/self/statm` (Linux; `None` elsewhere).
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Middleware: count and time every request by its route template.
pub async fn track(
    State(metrics): State<std::sync::Arc<Telemetry>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}
