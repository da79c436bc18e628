//! Load on `camlime serve`: throughput and latency of concurrent predicts on the bundled cat,
//! with and without a CamLIME job running beside them, on a server without tokens and on one
//! with a bearer token checked on every request (rate limits off: they are what is measured
//! against, not part of it).
//!
//! `cargo bench -p camlime --bench serve_load [-- REQUESTS CONCURRENCY ROUNDS]` (defaults 400, 50
//! and 3; the rates quoted are each setting's median over its rounds).
//! Starts the `camlime` binary of the same profile on a loopback port.

#![allow(clippy::unwrap_used)]

// Shared with the server's tests, which use the rest of it.
#[allow(dead_code)]
#[path = "../tests/cli/common/serve.rs"]
mod serve;

use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serve::{multipart, spawn_server_with_env};
use ureq::Agent;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Fire `requests` predicts from `concurrency` clients; returns (throughput, p50, p99, errors).
fn predicts(
    agent: &Agent,
    url: &str,
    form: &(String, Vec<u8>),
    bearer: Option<&str>,
    requests: usize,
    concurrency: usize,
) -> (f64, Duration, Duration, usize) {
    let next = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(requests));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..concurrency {
            scope.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let t = Instant::now();
                    let mut request = agent
                        .post(format!("{url}/v1/predict"))
                        .header("content-type", &form.0);
                    if let Some(bearer) = bearer {
                        request = request.header("authorization", bearer);
                    }
                    let response = request.send(&form.1[..]);
                    let ok = response.is_ok_and(|mut r| {
                        r.status() == 200 && r.body_mut().read_to_string().is_ok()
                    });
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    latencies.lock().unwrap().push(t.elapsed());
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let mut latencies = latencies.into_inner().unwrap();
    latencies.sort();
    (
        requests as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        errors.into_inner(),
    )
}

/// Throughput of one server: predicts alone, then beside a CamLIME job; `token` is sent as a
/// bearer token (the server started with it). Returns the two rates.
fn round(repo: &Path, requests: usize, concurrency: usize, token: Option<&str>) -> (f64, f64) {
    let data = std::env::temp_dir().join(format!("camlime-serve-bench-{}", std::process::id()));
    let flags = [
        "--max-waiting",
        "10000",
        "--ip-rate",
        "0",
        "--token-rate",
        "0",
    ];
    let tokens = token.map(|t| format!("bench user {t}"));
    let env: Vec<(&str, &str)> = tokens
        .as_deref()
        .map(|t| ("CAMLIME_TOKENS", t))
        .into_iter()
        .collect();
    let (mut child, url) = spawn_server_with_env(repo, &data, &flags, &env, Stdio::null());
    let image = std::fs::read(repo.join("models/samples/chelsea.png")).unwrap();
    let form = multipart(&image, "{}");
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections_per_host(concurrency)
        .build()
        .into();
    let bearer = token.map(|t| format!("Bearer {t}"));
    predicts(&agent, &url, &form, bearer.as_deref(), 20, 2);
    let mut rates = Vec::new();
    for (label, job) in [("alone", false), ("beside CamLIME", true)] {
        if job {
            let job = multipart(&image, r#"{"config": {"lime": {"num_samples": 1000}}}"#);
            let mut request = agent
                .post(format!("{url}/v1/jobs"))
                .header("content-type", &job.0);
            if let Some(bearer) = &bearer {
                request = request.header("authorization", bearer);
            }
            assert_eq!(request.send(&job.1[..]).unwrap().status(), 202);
        }
        let (rate, p50, p99, errors) = predicts(
            &agent,
            &url,
            &form,
            bearer.as_deref(),
            requests,
            concurrency,
        );
        println!(
            "  {:<5} {label:<15} {rate:7.1} predicts/s, p50 {:7.1} ms, p99 {:7.1} ms, {errors} errors",
            if token.is_some() { "auth" } else { "open" },
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
        rates.push(rate);
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
    (rates[0], rates[1])
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let requests = args.first().copied().unwrap_or(400);
    let concurrency = args.get(1).copied().unwrap_or(50);
    let rounds = args.get(2).copied().unwrap_or(3).max(1);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    println!(
        "camlime serve, {} cores, {requests} predicts (MobileNetV2, chelsea.png, multipart) from \
         {concurrency} clients, without tokens and with a bearer token on every request, \
         {rounds} rounds of each, alternating which goes first",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let token = "clm_bench-token-0123456789abcdef";
    let (mut open, mut auth) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        if r % 2 == 0 {
            open.push(round(&repo, requests, concurrency, None));
            auth.push(round(&repo, requests, concurrency, Some(token)));
        } else {
            auth.push(round(&repo, requests, concurrency, Some(token)));
            open.push(round(&repo, requests, concurrency, None));
        }
    }
    let alone = |rates: &[(f64, f64)]| median(rates.iter().map(|r| r.0).collect());
    let beside = |rates: &[(f64, f64)]| median(rates.iter().map(|r| r.1).collect());
    println!(
        "  medians: open {:.1} / {:.1}, auth {:.1} / {:.1} predicts/s (alone / beside CamLIME)",
        alone(&open),
        beside(&open),
        alone(&auth),
        beside(&auth)
    );
    println!(
        "  auth / open: {:.3} alone, {:.3} beside CamLIME",
        alone(&auth) / alone(&open),
        beside(&auth) / beside(&open)
    );
}
