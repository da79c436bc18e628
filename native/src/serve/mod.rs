//! `camlime serve`: the HTTP server (axum + tower-http) — a JSON API under `/v1`, asynchronous
//! jobs with Server-Sent-Events progress, limits on everything a client controls, `/healthz`,
//! `/metrics`, the OpenAPI document, and the built web app at `/`.
//!
//! Work runs off the async threads: synchronous requests on a compute pool of one permit per core
//! (a predict takes one core, a synchronous explanation all of them), jobs on `--jobs` workers
//! that each use every core. Results equal the command line's for the same parameters (the core's
//! results do not depend on the thread count).

mod api;
mod auth;
mod conn;
mod error;
pub(crate) mod input;
mod jobs;
mod prometheus;
mod rate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::routing::{any, get};
use camlime_core::engine::EngineChoice;
use camlime_core::lime::MAX_SAMPLES;
use camlime_core::preprocess::{DecodeOptions, ExifOrientation};
use clap::Args;
use tokio::sync::{Semaphore, watch};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use api::ApiDoc;
pub use auth::{Role, add_token};
use error::ApiError;
pub use input::parse_explain_request;
use jobs::{JobSettings, Jobs};
use prometheus::Telemetry;

use crate::models::{Bundle, DeviceArgs, LoadedModel};
use crate::parallel::available_threads;
use error::ErrorCode;

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Where forward passes run, and the GPU's arithmetic.
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Extra ONNX classifiers to serve besides the bundled ones (by file stem; ImageNet
    /// preprocessing).
    #[arg(long = "model", value_name = "FILE.onnx")]
    pub extra_models: Vec<PathBuf>,
    /// Folder of job states and results (kept across restarts).
    #[arg(long, default_value = "camlime-jobs", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The built web app to serve at `/` (default: `dist/` of the source tree, when built).
    #[arg(long, value_name = "DIR")]
    pub web_dir: Option<PathBuf>,
    /// Origins allowed to call the API from a browser (repeat; `*` for any). None: same origin.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// Threads per job and permits of the synchronous compute pool (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Jobs running at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Jobs waiting at most; more are refused with 429.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub queue: u16,
    /// Jobs one token may have queued or running at once; more are refused with 429 (a token's
    /// `jobs=N` overrides it).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub token_jobs: u16,
    /// Synchronous requests in flight at most (running or waiting); more are refused with 429.
    #[arg(long, default_value_t = 256)]
    pub max_waiting: usize,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 32 << 20)]
    pub max_body: usize,
    /// Largest decoded image, in pixels (decompression-bomb guard).
    #[arg(long, default_value_t = DecodeOptions::default().max_pixels)]
    pub max_pixels: u64,
    /// EXIF orientation of uploaded photos: `ignore` (as Pillow and torchvision) or `apply` (as
    /// `ImageOps.exif_transpose`).
    #[arg(long, default_value_t = ExifOrientation::Ignore)]
    pub exif_orientation: ExifOrientation,
    /// Most LIME / CamLIME samples a request may ask for.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(2..=MAX_SAMPLES as i64))]
    pub max_samples: u32,
    /// Most LIME / CamLIME samples `/v1/explain` answers synchronously (more: use /v1/jobs).
    #[arg(long, default_value_t = 300)]
    pub sync_samples: usize,
    /// Most images in one evaluation (`POST /v1/evaluations`).
    #[arg(long, default_value_t = 100)]
    pub max_eval_images: usize,
    /// Most Integrated-Gradients steps and noise-tunnel samples a request may ask for.
    #[arg(long, default_value_t = 1_000)]
    pub max_steps: usize,
    /// Seconds a synchronous request may compute.
    #[arg(long, default_value_t = 120.0)]
    pub request_timeout: f64,
    /// Seconds a job may run before it fails with `timeout`.
    #[arg(long, default_value_t = 3_600.0)]
    pub job_timeout: f64,
    /// Seconds a finished job's result is kept.
    #[arg(long, default_value_t = 7.0 * 86_400.0)]
    pub result_ttl: f64,
    /// Bearer tokens, one `NAME ROLE SECRET` line each (`camlime token new` writes them);
    /// the `CAMLIME_TOKENS` variable may hold more. With tokens, every `/v1` request but the
    /// OpenAPI document needs one.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Serve without tokens on a non-loopback address: anyone who reaches it may use it.
    #[arg(long)]
    pub no_auth: bool,
    /// Requests per second one client IP may send (0: no limit); more get 429.
    #[arg(long, default_value_t = 50)]
    pub ip_rate: u32,
    /// Requests one client IP may send at once, above its rate.
    #[arg(long, default_value_t = 200)]
    pub ip_burst: u32,
    /// Requests per second one token may send (0: no limit); more get 429.
    #[arg(long, default_value_t = 20)]
    pub token_rate: u32,
    /// Requests one token may send at once, above its rate.
    #[arg(long, default_value_t = 100)]
    pub token_burst: u32,
    /// Connections open at once; more are closed as they arrive.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers; then its connection is closed.
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Largest request head (request line and headers), in bytes; beyond, 431.
    #[arg(long, default_value_t = 64 << 10)]
    pub max_header_bytes: usize,
    /// Seconds a client has to send a request's body; then the request fails.
    #[arg(long, default_value_t = 60.0)]
    pub body_timeout: f64,
}

/// Who may call the server: its tokens; without any, only a loopback address or `--no-auth`
/// (said in the log).
fn access(args: &ServeArgs, environment: Option<String>) -> Result<auth::Access> {
    let access = auth::Access::new(args.tokens.clone(), environment, args.max_body)?;
    let addr = args.addr;
    match (access.tokens(), args.no_auth) {
        (Some(_), true) => anyhow::bail!(
            "--no-auth contradicts the tokens of {}",
            args.tokens
                .as_ref()
                .map_or(auth::TOKENS_VARIABLE.to_owned(), |p| p
                    .display()
                    .to_string())
        ),
        (Some(tokens), false) => {
            let (users, admins) = tokens.counts();
            tracing::info!(
                "{users} user and {admins} admin tokens: /v1 requests need `Authorization: \
                 Bearer` (SIGHUP reloads them)"
            );
        }
        (None, true) => tracing::warn!(
            "--no-auth: anyone who reaches {addr} may use this server and every job on it"
        ),
        (None, false) if addr.ip().is_loopback() => tracing::warn!(
            "no tokens: open to anyone on this machine ({addr}, local use); give --tokens \
             FILE to share it"
        ),
        (None, false) => anyhow::bail!(
            "{addr} is reachable from other machines: give tokens (--tokens FILE or {}; \
             `camlime token new` makes one) or, to serve it open, --no-auth",
            auth::TOKENS_VARIABLE
        ),
    }
    Ok(access)
}

/// What clients may ask for.
#[derive(Clone, Debug)]
pub struct Limits {
    /// How uploaded images are decoded: largest image, EXIF orientation.
    pub decode: DecodeOptions,
    /// Most samples.
    pub max_samples: usize,
    /// Most samples answered synchronously.
    pub sync_samples: usize,
    /// Most integration steps / noise samples.
    pub max_steps: usize,
    /// Most images in one evaluation.
    pub max_eval_images: usize,
    /// Synchronous requests in flight at most.
    pub max_waiting: usize,
    /// Synchronous compute time at most.
    pub request_timeout: Duration,
}

impl Limits {
    /// The limits of `caller`'s requests: its token's samples quota over the server's.
    fn of(&self, caller: &auth::Caller) -> Self {
        let mut limits = self.clone();
        if let Some(samples) = caller.quota.samples {
            limits.max_samples = samples;
        }
        limits
    }
}

/// Everything the handlers share.
pub struct AppState {
    models: Vec<Arc<LoadedModel>>,
    limits: Limits,
    threads: usize,
    /// Fixed threads for synchronous work (decoding, predicts, explanations' coordination).
    /// Not Tokio's blocking pool: tract keeps scratch memory per thread, and 50 concurrent
    /// predicts grew the process by ~510 MB on Tokio's ~40 blocking threads, by ~60 MB on two
    /// fixed threads (release build, 2-core machine; a second round: +1.5 MB).
    pool: rayon::ThreadPool,
    compute: Arc<Semaphore>,
    waiting: AtomicUsize,
    jobs: Arc<Jobs>,
    telemetry: Arc<Telemetry>,
    shutdown: watch::Receiver<bool>,
    /// The tokens (event streams end when their caller's token is revoked).
    access: Arc<auth::Access>,
}

/// Leaves the count of synchronous requests in flight when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AppState {
    fn enter_waiting(&self) -> Result<Waiting<'_>, ApiError> {
        let before = self.waiting.fetch_add(1, Ordering::SeqCst);
        let guard = Waiting(&self.waiting);
        if before >= self.limits.max_waiting {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                format!(
                    "{} requests are in flight already; try again later",
                    self.limits.max_waiting
                ),
            ));
        }
        Ok(guard)
    }
}

fn seconds(value: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{flag} must be a positive number of seconds, got {value}"))
}

fn load_models(
    bundle: &Bundle,
    extra: &[PathBuf],
    device: DeviceArgs,
) -> Result<Vec<Arc<LoadedModel>>> {
    let mut models = Vec::new();
    for entry in &bundle.manifest.models {
        let loaded = bundle
            .load(&entry.name)?
            .on_device(device, &EngineChoice::Auto)?;
        models.push(Arc::new(loaded));
    }
    for path in extra {
        let loaded = bundle
            .load_file(path)?
            .on_device(device, &EngineChoice::Auto)?;
        anyhow::ensure!(
            models.iter().all(|m| m.name != loaded.name),
            "two models are called `{}`: rename {}",
            loaded.name,
            path.display()
        );
        models.push(Arc::new(loaded));
    }
    Ok(models)
}

fn cors(origins: &[String]) -> Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).with_context(|| format!("bad --cors-origin `{o}`")))
            .collect::<Result<Vec<_>>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                axum::http::header::CONTENT_TYPE,
                axum::http::header::AUTHORIZATION,
            ])
            .expose_headers([axum::http::header::LOCATION]),
    ))
}

fn web_dir(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| {
        let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
        built.join("index.html").is_file().then_some(built)
    })
}

fn router(
    state: Arc<AppState>,
    args: &ServeArgs,
    access: Arc<auth::Access>,
    rates: Arc<rate::Rates>,
) -> Result<Router> {
    use axum::routing::post;
    let api = Router::new()
        .route("/v1/models", get(api::models))
        .route("/v1/predict", post(api::predict))
        .route("/v1/detect", post(api::detect))
        .route("/v1/explain", post(api::explain))
        .route("/v1/jobs", post(api::submit_job).get(api::list_jobs))
        .route("/v1/evaluations", post(api::submit_evaluation))
        .route("/v1/jobs/{id}", get(api::get_job).delete(api::cancel_job))
        .route("/v1/jobs/{id}/events", get(api::job_events))
        .route("/v1/openapi.json", get(api::openapi))
        .route("/v1/{*rest}", any(api::unknown_route))
        .route("/healthz", get(api::health))
        .route("/metrics", get(api::telemetry))
        .layer(DefaultBodyLimit::max(args.max_body))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(seconds(
            args.body_timeout,
            "body-timeout",
        )?))
        .with_state(state.clone());
    let mut app = match web_dir(args.web_dir.clone()) {
        Some(dir) => {
            anyhow::ensure!(
                dir.join("index.html").is_file(),
                "--web-dir {} has no index.html (build it with `trunk build --release`)",
                dir.display()
            );
            tracing::info!("serving the web app from {}", dir.display());
            let index = ServeFile::new(dir.join("index.html"));
            api.fallback_service(ServeDir::new(&dir).fallback(index))
        }
        None => api,
    };
    // Inside CORS: a browser's preflight carries no token. The client's rate is checked
    // before its token, the token's after.
    app = app
        .layer(axum::middleware::from_fn_with_state(
            rates.clone(),
            rate::limit_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            access,
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(rates, rate::limit_ip));
    if let Some(cors) = cors(&args.cors_origins)? {
        app = app.layer(cors);
    }
    Ok(app
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.telemetry.clone(),
            prometheus::track,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        ))
}

async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// Run `serve` until Ctrl-C or SIGTERM; `out` gets the line `listening on http://ADDR`.
pub fn serve(bundle: &Bundle, args: &ServeArgs, out: &mut dyn std::io::Write) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "camlime=info,tower_http=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .ok();
    let access = Arc::new(access(args, std::env::var(auth::TOKENS_VARIABLE).ok())?);
    let threads = args.threads.unwrap_or_else(available_threads).max(1);
    let limits = Limits {
        decode: DecodeOptions {
            max_pixels: args.max_pixels,
            exif_orientation: args.exif_orientation,
        },
        max_samples: args.max_samples as usize,
        sync_samples: args.sync_samples,
        max_steps: args.max_steps,
        max_eval_images: args.max_eval_images,
        max_waiting: args.max_waiting.max(1),
        request_timeout: seconds(args.request_timeout, "request-timeout")?,
    };
    let settings = JobSettings {
        dir: args.data_dir.clone(),
        workers: usize::from(args.jobs),
        queue: usize::from(args.queue),
        per_owner: usize::from(args.token_jobs),
        threads,
        timeout: seconds(args.job_timeout, "job-timeout")?,
        ttl: seconds(args.result_ttl, "result-ttl")?,
    };
    let models = load_models(bundle, &args.extra_models, args.device)?;
    let telemetry = Arc::new(Telemetry::default());
    let finished = telemetry.clone();
    let jobs = Jobs::start(
        settings,
        Box::new(move |status, code| finished.job_finished(status, code)),
    )?;
    let (stop, shutdown) = watch::channel(false);
    let state = Arc::new(AppState {
        models,
        limits,
        threads,
        pool: rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("camlime-compute-{i}"))
            .build()
            .context("cannot start the compute threads")?,
        compute: Arc::new(Semaphore::new(threads)),
        waiting: AtomicUsize::new(0),
        jobs: jobs.clone(),
        telemetry,
        shutdown,
        access: access.clone(),
    });
    let rates = Arc::new(rate::Rates::new(
        rate::Rate {
            per_second: args.ip_rate,
            burst: args.ip_burst,
        },
        rate::Rate {
            per_second: args.token_rate,
            burst: args.token_burst,
        },
    ));
    let app = router(state, args, access.clone(), rates.clone())?;
    let connections = conn::ConnLimits {
        max_connections: args.max_connections,
        header_timeout: seconds(args.header_timeout, "header-timeout")?,
        max_header_bytes: args.max_header_bytes,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr()?;
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
        jobs.spawn_workers().await;
        #[cfg(unix)]
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                return;
            };
            while hangups.recv().await.is_some() {
                match access.reload() {
                    Ok((users, admins)) => {
                        tracing::info!("tokens reloaded: {users} user and {admins} admin tokens")
                    }
                    Err(e) => tracing::warn!("tokens not reloaded: {e:#}"),
                }
            }
        });
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                rates.forget_idle();
            }
        });
        let on_signal = async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            jobs.shutdown(Duration::from_secs(30)).await;
            let _ = stop.send(true);
        };
        conn::serve(listener, app, connections, on_signal).await;
        anyhow::Ok(())
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    served?;
    tracing::info!("stopped");
    Ok(())
}
