//! The `/v1` handlers and the OpenAPI document generated from their types (utoipa).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use camlime_core::detection::{BoundingBox, Detection};
use camlime_core::evaluation::{self, Evaluation, Plan, Report, Row, paper_methods};
use camlime_core::explanation::{IdentityChoice, IdentityTarget, TaskConfig};
use camlime_core::face::{CropBox, FaceInfo};
use camlime_core::region::{Region, RegionChoice, RegionShape, RegionTarget};
use camlime_core::spec::Task;
use camlime_core::{ExplainConfig, ExplanationRecord, Layer, ModelSummary, Runtime};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::AppState;
use super::auth::{Caller, Role};
use super::error::{ApiError, ErrorBody, ErrorCode, ErrorDetail};
use super::input::{
    DetectRequest, EvalImage, EvalRequest, EvalSubmission, ExplainRequest, PredictRequest,
    Submission, check_config, find_model, heavy,
};
use super::jobs::{JobCounts, JobKind, JobResult, JobStatus, Progress, Status};
use crate::models::LoadedModel;
use crate::parallel::Threads;

/// The OpenAPI document of `/v1`.
#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerAuth),
    info(
        title = "CamLIME server",
        description = "Explain what CNN image classifiers look at: CamLIME, LIME, the CAM family \
                       and captum's attributions. Results are the explanation records of \
                       `camlime explain`. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        models,
        predict,
        detect,
        explain,
        submit_job,
        submit_evaluation,
        list_jobs,
        get_job,
        job_events,
        cancel_job,
        health
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        ModelListing,
        ModelSummary,
        Layer,
        PredictRequest,
        PredictResponse,
        PredictionInfo,
        DetectRequest,
        DetectResponse,
        DetectionInfo,
        Detection,
        BoundingBox,
        RegionChoice,
        RegionShape,
        Region,
        RegionTarget,
        IdentityChoice,
        IdentityTarget,
        FaceInfo,
        CropBox,
        ExplainRequest,
        EvalRequest,
        EvalImage,
        JobStatus,
        JobKind,
        Status,
        Progress,
        Health,
        JobCounts
    ))
)]
pub struct ApiDoc;

/// The document's security scheme: bearer tokens on every endpoint but `/healthz`.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "A token of the server's tokens file (`camlime token new`), as \
                 `Authorization: Bearer <token>`: needed when the server has tokens. A user's \
                 token sees its own jobs (others' answer 404); an admin's sees every job and \
                 `/metrics`. Missing or unknown: 401 `unauthorized`; not allowed: 403 `forbidden`.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
        openapi.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// A served model.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelListing {
    /// What the model offers: name, sha256, input size, classes, layers.
    #[serde(flatten)]
    pub summary: ModelSummary,
    /// What it is.
    pub title: String,
    /// Licence of the weights.
    pub licence: String,
}

/// One class.
#[derive(Debug, Serialize, ToSchema)]
pub struct PredictionInfo {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability.
    pub probability: f32,
}

/// One detection: the core's (its box in model-input pixels), and its box in the photo's.
#[derive(Debug, Serialize, ToSchema)]
pub struct DetectionInfo {
    /// Box, class, label, score and where the score sits in the model's outputs.
    #[serde(flatten)]
    pub detection: Detection,
    /// The box in the uploaded photo's pixels.
    pub image_box: BoundingBox,
}

/// A detector's detections in an image, best first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DetectResponse {
    /// The model.
    pub model: String,
    /// The photo's `[height, width]`.
    pub image_size: [u32; 2],
    /// The model input's `[height, width]` (where `box` lies).
    pub input_size: [u32; 2],
    /// Best first; `box` K of an explanation's `task` is the K-th.
    pub detections: Vec<DetectionInfo>,
}

/// The top classes of an image.
#[derive(Debug, Serialize, ToSchema)]
pub struct PredictResponse {
    /// The model.
    pub model: String,
    /// Best first.
    pub predictions: Vec<PredictionInfo>,
}

/// `/healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// camlime version.
    pub version: String,
    /// Served models.
    pub models: usize,
    /// Jobs by state.
    pub jobs: JobCounts,
}

fn listing(model: &LoadedModel) -> ModelListing {
    ModelListing {
        summary: model.classifier.summary(),
        title: model.title.clone(),
        licence: model.licence.clone(),
    }
}

/// The served models and their layers.
#[utoipa::path(get, path = "/v1/models", responses((status = 200, body = Vec<ModelListing>)))]
pub async fn models(State(state): State<Arc<AppState>>) -> Json<Vec<ModelListing>> {
    Json(state.models.iter().map(|m| listing(m)).collect())
}

/// Sets the cancel flag of synchronous work whose request went away (client disconnected).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Run synchronous work on `permits` of the compute pool (at most the core count), within the
/// request timeout; 429 when too many requests wait already.
async fn compute<T: Send + 'static>(
    state: &AppState,
    permits: u32,
    work: impl FnOnce(Arc<AtomicBool>) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _waiting = state.enter_waiting()?;
    let _permit = state
        .compute
        .clone()
        .acquire_many_owned(permits)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            )
        })?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let flag = cancel.clone();
    let (sender, mut receiver) = tokio::sync::oneshot::channel();
    state.pool.spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(flag)));
        let _ = sender.send(outcome);
    });
    let outcome = match tokio::time::timeout(state.limits.request_timeout, &mut receiver).await {
        Ok(outcome) => outcome,
        Err(_) => {
            cancel.store(true, Ordering::Relaxed);
            let _ = receiver.await;
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Timeout,
                format!(
                    "the request ran longer than {} s; submit it as a job (POST /v1/jobs)",
                    state.limits.request_timeout.as_secs_f64()
                ),
            ));
        }
    };
    match outcome {
        Ok(Ok(result)) => result,
        _ => {
            tracing::error!("a request's work panicked");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::InternalError,
                "the request failed inside the server",
            ))
        }
    }
}

fn decode_bytes(
    bytes: &[u8],
    options: &camlime_core::preprocess::DecodeOptions,
) -> Result<image::RgbImage, ApiError> {
    Ok(camlime_core::decode_image(bytes, options)?)
}

/// Classify an image: the top classes.
#[utoipa::path(
    post,
    path = "/v1/predict",
    request_body(content = PredictRequest, description = "JSON (image base64), or multipart/form-data with an `image` part and a `request` part holding this JSON without `image`"),
    responses(
        (status = 200, body = PredictResponse),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 429, body = ErrorBody)
    )
)]
pub async fn predict(
    State(state): State<Arc<AppState>>,
    submission: Submission<PredictRequest>,
) -> Result<Json<PredictResponse>, ApiError> {
    let request = submission.request;
    let model = find_model(&state, &request.model)?;
    if !(1..=1000).contains(&request.top) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidParameter,
            format!("top must lie in 1..=1000, got {}", request.top),
        ));
    }
    let top = usize::from(request.top);
    let name = model.name.clone();
    let face = Face::of(&state, &model, request.face)?;
    let predictions = on_base_image(
        &state,
        model,
        face,
        submission.image,
        move |model, _, base| {
            let mut rows = model.classifier.predict(&[base], top)?;
            Ok(rows.pop().unwrap_or_default())
        },
    )
    .await?;
    Ok(Json(PredictResponse {
        model: name,
        predictions: predictions
            .into_iter()
            .map(|p| PredictionInfo {
                class: p.class,
                label: p.label,
                probability: p.probability,
            })
            .collect(),
    }))
}

/// Detect objects with a detector: boxes, classes and scores, best first (what an
/// explanation's `task: {"kind": "detection", "box": K}` picks from).
#[utoipa::path(
    post,
    path = "/v1/detect",
    request_body(content = DetectRequest, description = "JSON (image base64), or multipart/form-data with an `image` part and a `request` part holding this JSON without `image`"),
    responses(
        (status = 200, body = DetectResponse),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 429, body = ErrorBody)
    )
)]
pub async fn detect(
    State(state): State<Arc<AppState>>,
    submission: Submission<DetectRequest>,
) -> Result<Json<DetectResponse>, ApiError> {
    let request = submission.request;
    let model = find_model(&state, &request.model)?;
    let name = model.name.clone();
    let threshold = request.score_threshold;
    let [h, w] = model.classifier.input_size().map(|d| d as u32);
    let (image_size, detections) = on_base_image(
        &state,
        model,
        None,
        submission.image,
        move |model, image, base| {
            let found = camlime_core::task::detect(&model.classifier, &base, threshold)?;
            Ok(([image.height(), image.width()], found))
        },
    )
    .await?;
    Ok(Json(DetectResponse {
        model: name,
        image_size,
        input_size: [h, w],
        detections: detections
            .into_iter()
            .map(|d| DetectionInfo {
                image_box: d.bbox.scaled([h, w], image_size),
                detection: d,
            })
            .collect(),
    }))
}

/// `work` on the compute pool with the decoded upload (a face model's: its face) and its base
/// image for `model` (resized to the model's input): what every one-image endpoint does.
async fn on_base_image<T: Send + 'static>(
    state: &AppState,
    model: Arc<LoadedModel>,
    face: Option<Face>,
    bytes: axum::body::Bytes,
    work: impl FnOnce(&LoadedModel, &image::RgbImage, image::RgbImage) -> Result<T, ApiError>
    + Send
    + 'static,
) -> Result<T, ApiError> {
    let decoding = state.limits.decode;
    compute(state, 1, move |_| {
        let image = decode_bytes(&bytes, &decoding)?;
        let (image, _) = Face::crop(face.as_ref(), image)?;
        let base = model.classifier.spec().preprocessing.base_image(&image)?;
        work(&model, &image, base)
    })
    .await
}

/// How a face model's image is cut from an upload: its detector and the chosen face.
#[derive(Clone)]
struct Face {
    detector: Arc<LoadedModel>,
    crop: camlime_core::face::FaceCrop,
    index: Option<usize>,
}

impl Face {
    /// A face model's face choice (its detector must be served); `None` for other models, to
    /// which a face may not be given.
    fn of(
        state: &AppState,
        model: &LoadedModel,
        index: Option<usize>,
    ) -> Result<Option<Face>, ApiError> {
        match &model.classifier.spec().face {
            Some(crop) => Ok(Some(Face {
                detector: find_model(state, &crop.detector)?,
                crop: crop.clone(),
                index,
            })),
            None if index.is_some() => Err(ApiError::bad_request(
                ErrorCode::InvalidParameter,
                format!(
                    "`face` chooses the face a face model explains; `{}` is not one",
                    model.name
                ),
            )),
            None => Ok(None),
        }
    }

    /// The image a model sees: the face for a face model, else the upload as it is.
    fn crop(
        face: Option<&Face>,
        image: image::RgbImage,
    ) -> Result<(image::RgbImage, Option<FaceInfo>), ApiError> {
        let Some(face) = face else {
            return Ok((image, None));
        };
        let choice = camlime_core::detection::BoxChoice {
            index: face.index,
            class: None,
        };
        let (cropped, info) =
            camlime_core::task::crop_face(&face.detector.classifier, &image, &choice, &face.crop)?;
        Ok((cropped, Some(info)))
    }
}

/// The checked pieces of an explain request.
struct Checked {
    model: Arc<LoadedModel>,
    config: ExplainConfig,
    source: Option<String>,
    face: Option<Face>,
}

/// The request checked as the work will check it; a `reference` photo becomes the identity
/// task of its best face's embedding first (decoded on the compute pool).
async fn check(
    state: &AppState,
    caller: &Caller,
    request: ExplainRequest,
    reference: Option<axum::body::Bytes>,
) -> Result<Checked, ApiError> {
    let model = find_model(state, &request.model)?;
    let face = Face::of(state, &model, request.face)?;
    let mut config = request.config;
    if let Some(bytes) = reference {
        config.task = reference_task(state, &model, &config, bytes).await?;
    }
    check_config(&config, &model, &state.limits.of(caller))?;
    Ok(Checked {
        face,
        model,
        config,
        source: request.source,
    })
}

/// The identity task of a reference photo: the embedding of its best face, as `explain
/// --reference` computes it.
async fn reference_task(
    state: &AppState,
    model: &Arc<LoadedModel>,
    config: &ExplainConfig,
    bytes: axum::body::Bytes,
) -> Result<TaskConfig, ApiError> {
    let spec = model.classifier.spec();
    if spec.task != Task::Embedding {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidParameter,
            format!(
                "`reference` compares faces; `{}` is {} model, not a face embedding",
                model.name,
                spec.task.with_article()
            ),
        ));
    }
    if config.task != TaskConfig::Classification {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidParameter,
            "give the reference face either as `reference` or as `config.task`, not both",
        ));
    }
    let face = Face::of(state, model, None)?;
    let model = model.clone();
    let decoding = state.limits.decode;
    compute(state, 1, move |_| {
        let embedding = decode_bytes(&bytes, &decoding)
            .and_then(|photo| Face::crop(face.as_ref(), photo))
            .and_then(|(image, _)| {
                let base = model.classifier.spec().preprocessing.base_image(&image)?;
                Ok(camlime_core::task::embed(&model.classifier, &base)?)
            });
        embedding
            .map(|reference| TaskConfig::Identity(IdentityChoice { reference }))
            .map_err(|mut e| {
                e.detail.message = format!("the reference: {}", e.detail.message);
                e
            })
    })
    .await
}

fn explain_with(
    checked: &Checked,
    image: &image::RgbImage,
    runtime: &Threads,
) -> Result<ExplanationRecord, ApiError> {
    let (image, face) = Face::crop(checked.face.as_ref(), image.clone())?;
    let mut record = camlime_core::explain(
        &checked.model.classifier,
        &image,
        checked.source.clone(),
        &checked.config,
        runtime,
    )?;
    record.image.face = face;
    Ok(record)
}

/// Explain an image now (light methods: CAMs, attributions, LIME/CamLIME with few samples).
#[utoipa::path(
    post,
    path = "/v1/explain",
    request_body(content = ExplainRequest, description = "JSON (image base64), or multipart/form-data with an `image` part, a `reference` part for a face embedding's identity, and a `request` part holding this JSON without `image` and `reference`"),
    responses(
        (status = 200, description = "The explanation record (as `camlime explain --json`)", body = Object),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, description = "Too heavy: use /v1/jobs", body = ErrorBody),
        (status = 429, body = ErrorBody)
    )
)]
pub async fn explain(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    submission: Submission<ExplainRequest>,
) -> Result<Response, ApiError> {
    let checked = check(&state, &caller, submission.request, submission.reference).await?;
    if let Some(reason) = heavy(&checked.config, &state.limits) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::UseJobs,
            format!("too heavy to answer synchronously ({reason}): POST it to /v1/jobs"),
        ));
    }
    let threads = state.threads;
    let permits = u32::try_from(threads).unwrap_or(u32::MAX);
    let decoding = state.limits.decode;
    let bytes = submission.image;
    let record = compute(&state, permits, move |cancel| {
        let image = decode_bytes(&bytes, &decoding)?;
        let runtime = Threads::new(threads).with_cancel_flag(cancel);
        explain_with(&checked, &image, &runtime)
    })
    .await?;
    Ok(Json(record).into_response())
}

/// Submit an explanation as a job; follow it with `/v1/jobs/{id}/events`.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    request_body(content = ExplainRequest, description = "As /v1/explain, any method and size"),
    responses(
        (status = 202, body = JobStatus, headers(("Location" = String, description = "The job's URL"))),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 429, description = "The queue is full", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody)
    )
)]
pub async fn submit_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    submission: Submission<ExplainRequest>,
) -> Result<Response, ApiError> {
    let checked = check(&state, &caller, submission.request, submission.reference).await?;
    // Decode now, so that a corrupt image is the client's 400 rather than a failed job; the job
    // keeps the (smaller) file and decodes it again when it runs.
    let decoding = state.limits.decode;
    let bytes = submission.image;
    let copy = bytes.clone();
    compute(&state, 1, move |_| decode_bytes(&copy, &decoding).map(drop)).await?;
    let method = checked.config.method.name().to_owned();
    let model = checked.model.name.clone();
    let status = state.jobs.submit(
        JobKind::Explain,
        &model,
        &method,
        &caller,
        Box::new(move |runtime| {
            let image = decode_bytes(&bytes, &decoding)?;
            let record = explain_with(&checked, &image, runtime)?;
            Ok(JobResult::Explanation(Box::new(record)))
        }),
    )?;
    Ok(accepted(status))
}

/// 202 with the job's status and its URL.
fn accepted(status: JobStatus) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", status.id)) {
        headers.insert(header::LOCATION, location);
    }
    (StatusCode::ACCEPTED, headers, Json(status)).into_response()
}

/// Evaluate explanation methods with metrics over images, as `camlime eval`, as a job: follow
/// it with `/v1/jobs/{id}/events` (the stage names the image, method and metric; `done` counts
/// the scores of `total`); its `result` is the summary table, the mean curves and every score.
#[utoipa::path(
    post,
    path = "/v1/evaluations",
    request_body(content = EvalRequest, description = "multipart/form-data with `image` parts (file names name them), optional `mask` parts (matched to images by file name without extension) and a `request` part holding this JSON without `images`; or this JSON with the images as base64"),
    responses(
        (status = 202, body = JobStatus, headers(("Location" = String, description = "The job's URL"))),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 429, description = "The queue is full", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody)
    )
)]
pub async fn submit_evaluation(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    submission: EvalSubmission,
) -> Result<Response, ApiError> {
    let EvalSubmission { request, images } = submission;
    let model = find_model(&state, &request.model)?;
    let limits = &state.limits.of(&caller);
    if images.len() > limits.max_eval_images {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidParameter,
            format!(
                "an evaluation takes at most {} images on this server, got {}",
                limits.max_eval_images,
                images.len()
            ),
        ));
    }
    let methods = request.methods.unwrap_or_else(paper_methods);
    let metrics = request.metrics.unwrap_or_else(|| vec!["paper".to_owned()]);
    let have_masks = images.iter().any(|(_, _, mask)| mask.is_some());
    let plan = Plan::new(
        &methods,
        &metrics,
        &request.metric_params,
        have_masks,
        request.config,
        request.metric_seed,
    )
    .map_err(|e| ApiError::bad_request(ErrorCode::InvalidParameter, e.to_string()))?;
    if let Some(metric) = plan.mask_metric() {
        if !have_masks {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidParameter,
                format!("{metric} needs ground-truth masks"),
            ));
        }
        if let Some((name, _, _)) = images.iter().find(|(_, _, mask)| mask.is_none()) {
            return Err(ApiError::bad_request(
                ErrorCode::MissingMask,
                format!("localisation metrics need a mask for every image; `{name}` has none"),
            ));
        }
    }
    for method in plan.methods() {
        check_config(&plan.method_config(*method), &model, limits)?;
    }
    // Decode now, so that a corrupt image or mask is the client's 400 rather than a failed job.
    let decoding = limits.decode;
    let images = compute(&state, 1, move |_| {
        for (name, image, mask) in &images {
            let decoded = decode_bytes(image, &decoding).map_err(|e| named(name, e))?;
            if let Some(mask) = mask {
                let mask = decode_bytes(mask, &decoding).map_err(|e| named(name, e))?;
                if mask.dimensions() != decoded.dimensions() {
                    return Err(ApiError::bad_request(
                        ErrorCode::InvalidMask,
                        format!(
                            "the mask of `{name}` is {:?}, the image {:?}",
                            mask.dimensions(),
                            decoded.dimensions()
                        ),
                    ));
                }
            }
        }
        Ok(images)
    })
    .await?;
    let method = plan
        .methods()
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join(",");
    let name = model.name.clone();
    let metric_seed = request.metric_seed;
    let limits = state.limits.decode;
    let status = state.jobs.submit(
        JobKind::Eval,
        &name,
        &method,
        &caller,
        Box::new(move |runtime| {
            evaluate(&model, &plan, &images, &limits, runtime).map(|(report, rows, seconds)| {
                JobResult::Evaluation(Box::new(Evaluation {
                    model: model.name.clone(),
                    model_sha256: model.classifier.sha256().to_owned(),
                    images: images.iter().map(|(name, _, _)| name.clone()).collect(),
                    methods: plan.methods().iter().map(|m| m.name().to_owned()).collect(),
                    metrics: plan.metrics().to_vec(),
                    metric_seed,
                    report,
                    rows,
                    seconds,
                }))
            })
        }),
    )?;
    Ok(accepted(status))
}

/// An error about one image of an evaluation.
fn named(name: &str, mut error: ApiError) -> ApiError {
    error.detail.message = format!("`{name}`: {}", error.detail.message);
    error
}

/// Run an evaluation job: the tables, the rows and the seconds. Progress names the step and
/// counts the scores; the methods' own stages are not published.
fn evaluate(
    model: &LoadedModel,
    plan: &Plan,
    images: &[(String, axum::body::Bytes, Option<axum::body::Bytes>)],
    limits: &camlime_core::preprocess::DecodeOptions,
    runtime: &Threads,
) -> Result<(Report, Vec<Row>, f64), ApiError> {
    let clock = std::time::Instant::now();
    let classifier = &model.classifier;
    let inner = Threads::new(runtime.threads()).with_cancel_flag(runtime.cancel_flag());
    let names: Vec<String> = images.iter().map(|(name, _, _)| name.clone()).collect();
    let done = HashSet::new();
    let total = plan.pending(&names, &done);
    let scored = std::cell::Cell::new(0);
    let mut rows = Vec::new();
    let failed = |e: camlime_core::Error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::EvaluationFailed,
            e.to_string(),
        )
    };
    for (name, image, mask) in images {
        runtime.progress(&format!("{name} · preparing"), scored.get(), total);
        let image = evaluation::Image::read(
            classifier,
            image,
            mask.as_deref(),
            plan.config().target,
            limits,
        )
        .map_err(|e| named(name, failed(e)))?;
        plan.evaluate_image(
            classifier,
            name,
            &image,
            &done,
            &inner,
            &mut |step| runtime.progress(step, scored.get(), total),
            &mut |row| -> camlime_core::Result<()> {
                rows.push(row);
                scored.set(scored.get() + 1);
                Ok(())
            },
        )
        .map_err(failed)?;
    }
    runtime.progress("summarising", scored.get(), total);
    Ok((
        plan.report(&rows, &names),
        rows,
        clock.elapsed().as_secs_f64(),
    ))
}

/// `GET /v1/jobs`' query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only the jobs of this token's name (an admin's filter; a user sees only their own).
    pub owner: Option<String>,
}

/// The caller's kept jobs (an admin's: every token's), oldest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    params(ListQuery),
    responses((status = 200, body = Vec<JobStatus>), (status = 403, body = ErrorBody))
)]
pub async fn list_jobs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<JobStatus>>, ApiError> {
    if let Some(owner) = &query.owner
        && caller.role != Role::Admin
        && caller.name.as_ref() != Some(owner)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "only an admin token lists other tokens' jobs",
        ));
    }
    Ok(Json(state.jobs.list(&caller, query.owner.as_deref())))
}

/// A job's status; with `result` (the explanation record) once it is done.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job's status fields and, when done, `result`: the explanation record", body = JobStatus),
        (status = 404, body = ErrorBody)
    )
)]
pub async fn get_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let status = state.jobs.get(&id, &caller)?.status();
    let mut body = serde_json::to_string(&status).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            e.to_string(),
        )
    })?;
    if status.status == Status::Done {
        let record = state.jobs.record(&id)?;
        body.pop();
        body.push_str(",\"result\":");
        body.push_str(&record);
        body.push('}');
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// Server-Sent Events: the job's status (JSON, as `GET /v1/jobs/{id}` without `result`) now and
/// on every change; the stream ends after the final status.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "text/event-stream of JobStatus", content_type = "text/event-stream", body = JobStatus),
        (status = 404, body = ErrorBody)
    )
)]
pub async fn job_events(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let receiver = state.jobs.get(&id, &caller)?.subscribe();
    let shutdown = state.shutdown.clone();
    let access = state.access.clone();
    let reloads = access.reloads();
    let stream = futures_util::stream::unfold(
        (receiver, shutdown, reloads, false, true),
        move |(mut receiver, mut shutdown, mut reloads, finished, first)| {
            let (access, caller) = (access.clone(), caller.clone());
            async move {
                if finished {
                    return None;
                }
                if !first {
                    loop {
                        tokio::select! {
                            changed = receiver.changed() => {
                                changed.ok()?;
                                break;
                            }
                            _ = shutdown.wait_for(|stop| *stop) => break,
                            // A revoked token's stream ends at the reload.
                            reloaded = reloads.changed() => {
                                reloaded.ok()?;
                                if !access.still_valid(&caller) {
                                    return None;
                                }
                            }
                        }
                    }
                }
                let status = receiver.borrow_and_update().clone();
                let stop = status.status.is_terminal() || *shutdown.borrow();
                let event = Event::default()
                    .json_data(&status)
                    .unwrap_or_else(|_| Event::default().data("{}"));
                Some((Ok(event), (receiver, shutdown, reloads, stop, false)))
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Cancel a queued or running job (202 with its status; a running job ends `cancelled` at its
/// next chunk), or delete a finished job and its result (204).
#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 202, body = JobStatus), (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody)
    )
)]
pub async fn cancel_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(match state.jobs.cancel(&id, &caller)? {
        Some(status) => (StatusCode::ACCEPTED, Json(status)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Liveness and a summary.
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, body = Health)))]
pub async fn health(State(state): State<Arc<AppState>>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        models: state.models.len(),
        jobs: state.jobs.counts(),
    })
}

/// The Prometheus text exposition.
pub async fn telemetry(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.telemetry.encode(state.jobs.counts()),
    )
        .into_response()
}

/// Any other path under `/v1`: 404 (not the web app's page).
pub async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no endpoint {}; see /v1/openapi.json", uri.path()),
    )
}

/// The OpenAPI document.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
