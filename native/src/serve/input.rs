//! Request bodies: JSON with the image as base64, or `multipart/form-data` with the image as a
//! file part and the rest either as a `request` part holding the same JSON or as plain fields
//! (`-F model=mobilenet_v2 -F method=gradcam -F samples=500`: the command line's flag names,
//! parsed by its parser). Anything else is 415.
//! The parsed request becomes a [`Prepared`] explanation only after every check the work would
//! make later: the image decodes within the pixel limit, the model, method, layers, target and
//! parameters exist and lie within the server's limits.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};
use base64::Engine;
use camlime_core::attribution::NoiseTunnel;
use camlime_core::cam::CamMethod;
use camlime_core::{ExplainConfig, Method};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorCode};
use super::{AppState, Limits};
use crate::flags::ConfigFlags;
use crate::models::LoadedModel;

/// `POST /v1/predict`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// A model of `GET /v1/models` (default `mobilenet_v2`).
    #[serde(default = "default_model")]
    pub model: String,
    /// The image, base64 (JSON bodies; multipart sends it as the `image` part).
    #[serde(default)]
    pub image: Option<String>,
    /// How many classes to return (1–1000, default 5).
    #[serde(default = "default_top")]
    pub top: u16,
    /// A face model predicts on this face of the image (best first; default the best).
    #[serde(default)]
    pub face: Option<usize>,
}

/// `POST /v1/detect`: the command line's `detect`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectRequest {
    /// A detector of `GET /v1/models` (default `nanodet`).
    #[serde(default = "default_detector")]
    pub model: String,
    /// The image, base64 (JSON bodies; multipart sends it as the `image` part).
    #[serde(default)]
    pub image: Option<String>,
    /// Detections scoring above this (default: the model's threshold).
    #[serde(default)]
    pub score_threshold: Option<f32>,
}

/// `POST /v1/explain` and `POST /v1/jobs`: the command line's `explain`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// A model of `GET /v1/models` (default `mobilenet_v2`).
    #[serde(default = "default_model")]
    pub model: String,
    /// The image, base64 (JSON bodies; multipart sends it as the `image` part).
    #[serde(default)]
    pub image: Option<String>,
    /// What the record calls the image (e.g. its file name).
    #[serde(default)]
    pub source: Option<String>,
    /// The explanation's settings, the schema of a record's `config` (so a record's `config`
    /// replays it): any subset of the fields, the rest at their defaults.
    #[serde(default)]
    pub config: ExplainConfig,
    /// A face model explains this face of the image (best first; default the best): the crop
    /// its face detector finds, kept in the record's `image.face`.
    #[serde(default)]
    pub face: Option<usize>,
    /// A face embedding model explains the similarity of the face to this photo's best face
    /// (base64; multipart sends it as the `reference` part): `--reference`, which sets
    /// `config.task` to `identity` with that face's embedding.
    #[serde(default)]
    pub reference: Option<String>,
}

/// `POST /v1/evaluations`: the command line's `eval` over the images sent with it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalRequest {
    /// A model of `GET /v1/models` (default `mobilenet_v2`).
    #[serde(default = "default_model")]
    pub model: String,
    /// Explanation methods (default: the paper's `lime`, `camlime`, `gradcam`, `gradcam++`,
    /// `layercam`, `eigencam`).
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub methods: Option<Vec<Method>>,
    /// Quantus metric names, `paper` (the paper's eight with its settings, the default) or `all`.
    #[serde(default)]
    pub metrics: Option<Vec<String>>,
    /// Metric parameters over the defaults: `{"PixelFlipping": {"features_in_step": 224}}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metric_params: BTreeMap<String, Value>,
    /// Seed of the metrics' random draws.
    #[serde(default)]
    pub metric_seed: u64,
    /// The methods' settings, as `/v1/explain`'s `config` (its `method` is replaced by each of
    /// `methods`).
    #[serde(default)]
    pub config: ExplainConfig,
    /// JSON bodies: the images (multipart sends them as `image` parts, masks as `mask` parts).
    #[serde(default)]
    pub images: Vec<EvalImage>,
}

impl EvalRequest {
    /// The request from a form's plain fields: `model`, `methods` and `metrics` (comma-separated),
    /// `metric_seed`, and the explanation settings as `/v1/explain`'s fields (no `method`).
    fn from_fields(fields: &[(String, String)]) -> Result<Self, ApiError> {
        let list = |value: &str| value.split(',').map(|v| v.trim().to_owned()).collect();
        let mut request = Self {
            model: default_model(),
            methods: None,
            metrics: None,
            metric_params: BTreeMap::new(),
            metric_seed: 0,
            config: ExplainConfig::default(),
            images: Vec::new(),
        };
        request.config = settings(fields, &mut |name, value| {
            match name {
                "model" => request.model = value.to_owned(),
                "methods" => {
                    let methods: camlime_core::Result<Vec<Method>> =
                        value.split(',').map(|m| m.trim().parse()).collect();
                    request.methods = Some(methods.map_err(|e| {
                        ApiError::bad_request(ErrorCode::UnknownMethod, e.to_string())
                    })?);
                }
                "metrics" => request.metrics = Some(list(value)),
                "metric_params" => {
                    request.metric_params = serde_json::from_str(value).map_err(|e| {
                        ApiError::bad_request(
                            ErrorCode::InvalidJson,
                            format!("field `metric_params`: {e}"),
                        )
                    })?;
                }
                "metric_seed" => request.metric_seed = parse_field(name, value)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(request)
    }
}

/// An image of a JSON evaluation request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalImage {
    /// What the results call it (e.g. its file name); unique within the request.
    pub name: String,
    /// The image, base64.
    pub image: String,
    /// Its ground-truth mask for localisation metrics (base64 image, non-zero = relevant).
    #[serde(default)]
    pub mask: Option<String>,
}

/// An evaluation request with its images (and masks) as bytes, in the order sent.
#[derive(Debug)]
pub struct EvalSubmission {
    /// The parsed JSON, `images` emptied.
    pub request: EvalRequest,
    /// (name, image, mask).
    pub images: Vec<(String, Bytes, Option<Bytes>)>,
}

fn default_model() -> String {
    "mobilenet_v2".into()
}

fn default_detector() -> String {
    "nanodet".into()
}

fn default_top() -> u16 {
    5
}

/// A request body with the image bytes taken out of it.
#[derive(Debug)]
pub struct Submission<T> {
    /// The parsed JSON.
    pub request: T,
    /// The image file's bytes.
    pub image: Bytes,
    /// The reference face photo's bytes (explanations of a face embedding).
    pub reference: Option<Bytes>,
}

/// Request types that carry a base64 image.
pub trait WithImage: Sized {
    /// Whether the request takes a `reference` photo besides its image.
    const REFERENCE: bool = false;

    /// Take the base64 image out of the request.
    fn take_image(&mut self) -> Option<String>;

    /// Take the base64 reference photo out of the request.
    fn take_reference(&mut self) -> Option<String> {
        None
    }

    /// The request from a form's plain fields (name, value), in the order sent.
    fn from_fields(fields: &[(String, String)]) -> Result<Self, ApiError>;
}

impl WithImage for DetectRequest {
    fn take_image(&mut self) -> Option<String> {
        self.image.take()
    }

    fn from_fields(fields: &[(String, String)]) -> Result<Self, ApiError> {
        let mut request = Self {
            model: default_detector(),
            image: None,
            score_threshold: None,
        };
        for (name, value) in fields {
            match name.as_str() {
                "model" => request.model = value.clone(),
                "score_threshold" => request.score_threshold = Some(parse_field(name, value)?),
                other => return Err(unknown_field(other, "`model` and `score_threshold`")),
            }
        }
        Ok(request)
    }
}

impl WithImage for PredictRequest {
    fn take_image(&mut self) -> Option<String> {
        self.image.take()
    }

    fn from_fields(fields: &[(String, String)]) -> Result<Self, ApiError> {
        let mut request = Self {
            model: default_model(),
            image: None,
            top: default_top(),
            face: None,
        };
        for (name, value) in fields {
            match name.as_str() {
                "model" => request.model = value.clone(),
                "top" => request.top = parse_field(name, value)?,
                "face" => request.face = Some(parse_field(name, value)?),
                other => return Err(unknown_field(other, "`model`, `top` and `face`")),
            }
        }
        Ok(request)
    }
}

impl WithImage for ExplainRequest {
    const REFERENCE: bool = true;

    fn take_image(&mut self) -> Option<String> {
        self.image.take()
    }

    fn take_reference(&mut self) -> Option<String> {
        self.reference.take()
    }

    fn from_fields(fields: &[(String, String)]) -> Result<Self, ApiError> {
        let mut request = Self {
            model: default_model(),
            image: None,
            source: None,
            config: ExplainConfig::default(),
            face: None,
            reference: None,
        };
        request.config = settings(fields, &mut |name, value| {
            match name {
                "model" => request.model = value.to_owned(),
                "source" => request.source = Some(value.to_owned()),
                "face" => request.face = Some(parse_field(name, value)?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(request)
    }
}

/// A plain field's value as a number or other typed value.
fn parse_field<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidParameter,
            format!("field `{name}`: `{value}`: {e}"),
        )
    })
}

fn unknown_field(name: &str, known: &str) -> ApiError {
    ApiError::bad_request(
        ErrorCode::InvalidMultipart,
        format!("unexpected field `{name}`: this form takes `image` and {known}"),
    )
}

/// The explanation settings of a form: `method`, and the command line's settings flags by name
/// (`samples`, `layer`, `eigen_smooth=true`, …) parsed by its parser, so that a value is read
/// and checked as `camlime explain` reads it; `own` takes the request's other fields first
/// (`Ok(true)`: taken).
fn settings(
    fields: &[(String, String)],
    own: &mut dyn FnMut(&str, &str) -> Result<bool, ApiError>,
) -> Result<ExplainConfig, ApiError> {
    let mut method = Method::CamLime;
    let mut flags = Vec::new();
    for (name, value) in fields {
        if own(name, value)? {
            continue;
        }
        if name == "method" {
            method = value.trim().parse().map_err(|e: camlime_core::Error| {
                ApiError::bad_request(ErrorCode::UnknownMethod, e.to_string())
            })?;
        } else {
            flags.push((name.as_str(), value.as_str()));
        }
    }
    ConfigFlags::parse_pairs(flags)
        .and_then(|flags| flags.config(method))
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidParameter, format!("{e:#}")))
}

fn decode_base64(encoded: &str, what: &str) -> Result<Bytes, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map(Bytes::from)
        .map_err(|e| {
            ApiError::bad_request(
                ErrorCode::InvalidImage,
                format!("{what} is not base64: {e}"),
            )
        })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(ErrorCode::InvalidJson, format!("invalid request JSON: {e}"))
    })
}

impl<S, T> FromRequest<S> for Submission<T>
where
    S: Send + Sync,
    T: DeserializeOwned + WithImage + Send,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = content_type(&req);
        if content_type.starts_with("application/json") {
            let body = Bytes::from_request(req, state).await.map_err(body_error)?;
            let mut request: T = parse_json(&body)?;
            let encoded = request.take_image().ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::MissingImage,
                    "the request has no `image` (base64)",
                )
            })?;
            let image = decode_base64(&encoded, "`image`")?;
            let reference = request
                .take_reference()
                .map(|encoded| decode_base64(&encoded, "`reference`"))
                .transpose()?;
            return Ok(Self {
                request,
                image,
                reference,
            });
        }
        if content_type.starts_with("multipart/form-data") {
            let mut image = None;
            let mut reference = None;
            let mut request = None;
            let mut fields = Vec::new();
            for (name, file, bytes) in read_parts(req, state).await? {
                match name.as_str() {
                    "image" => image = Some(bytes),
                    "reference" if T::REFERENCE => reference = Some(bytes),
                    "request" => request = Some(parse_json::<T>(&bytes)?),
                    _ if file.is_some() => {
                        return Err(ApiError::bad_request(
                            ErrorCode::InvalidMultipart,
                            format!("unexpected file part `{name}`: the image is the `image` part"),
                        ));
                    }
                    _ => fields.push((name, plain_text(&bytes)?)),
                }
            }
            let image = image.ok_or_else(|| {
                ApiError::bad_request(ErrorCode::MissingImage, "the form has no `image` part")
            })?;
            let mut request = one_of(request, &fields, T::from_fields)?;
            if request.take_image().is_some() || request.take_reference().is_some() {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidMultipart,
                    "send the image as the `image` part and the reference as the `reference` \
                     part, not inside `request`",
                ));
            }
            return Ok(Self {
                request,
                image,
                reference,
            });
        }
        Err(unsupported(&content_type))
    }
}

/// A form's settings: its `request` part, or its plain fields, never both.
fn one_of<T>(
    request: Option<T>,
    fields: &[(String, String)],
    from_fields: impl FnOnce(&[(String, String)]) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    match (request, fields.is_empty()) {
        (Some(_), false) => Err(ApiError::bad_request(
            ErrorCode::InvalidMultipart,
            "send the settings either as a `request` part or as plain fields, not both",
        )),
        (Some(request), true) => Ok(request),
        (None, _) => from_fields(fields),
    }
}

/// A plain field's value as text.
fn plain_text(bytes: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        ApiError::bad_request(
            ErrorCode::InvalidMultipart,
            "a form field is not UTF-8 text",
        )
    })
}

/// Every part of a multipart body as (part name, file name, content). The whole body (bounded by
/// `--max-body`) is read before any part is judged, so a bad part is answered after the upload
/// instead of cutting it off (clients see a broken pipe, not the error, when the server answers
/// mid-upload).
async fn read_parts<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<Vec<(String, Option<String>, Bytes)>, ApiError> {
    let mut multipart = Multipart::from_request(req, state)
        .await
        .map_err(|e| multipart_error(e.status(), e.body_text()))?;
    let mut parts = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e.status(), e.body_text()))?
    {
        let name = field.name().unwrap_or("").to_owned();
        let file = field.file_name().map(str::to_owned);
        let bytes = field
            .bytes()
            .await
            .map_err(|e| multipart_error(e.status(), e.body_text()))?;
        parts.push((name, file, bytes));
    }
    Ok(parts)
}

/// The request's Content-Type, lower-case (empty when absent).
fn content_type(req: &Request) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn unsupported(content_type: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::UnsupportedMediaType,
        format!(
            "Content-Type must be application/json or multipart/form-data, got `{}`",
            if content_type.is_empty() {
                "none"
            } else {
                content_type
            }
        ),
    )
}

/// A file part's name without its extension (masks are matched to images by it).
fn stem(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(stem, _)| stem)
}

impl<S: Send + Sync> FromRequest<S> for EvalSubmission {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = content_type(&req);
        let mut images = Vec::new();
        let request = if content_type.starts_with("application/json") {
            let body = Bytes::from_request(req, state).await.map_err(body_error)?;
            let mut request: EvalRequest = parse_json(&body)?;
            for image in std::mem::take(&mut request.images) {
                if image.name.trim().is_empty() {
                    return Err(ApiError::bad_request(
                        ErrorCode::InvalidParameter,
                        "every image needs a non-empty `name`",
                    ));
                }
                let what = format!("image `{}`", image.name);
                let bytes = decode_base64(&image.image, &what)?;
                let mask = image
                    .mask
                    .as_deref()
                    .map(|m| decode_base64(m, &format!("the mask of {what}")))
                    .transpose()?;
                images.push((image.name, bytes, mask));
            }
            request
        } else if content_type.starts_with("multipart/form-data") {
            let mut request = None;
            let mut masks = Vec::new();
            let mut fields = Vec::new();
            for (part, file, bytes) in read_parts(req, state).await? {
                let named = || {
                    file.clone().filter(|f| !f.is_empty()).ok_or_else(|| {
                        ApiError::bad_request(
                            ErrorCode::InvalidMultipart,
                            format!("every `{part}` part needs a file name"),
                        )
                    })
                };
                match part.as_str() {
                    "image" => images.push((named()?, bytes, None)),
                    "mask" => masks.push((named()?, bytes)),
                    "request" => request = Some(parse_json::<EvalRequest>(&bytes)?),
                    other if file.is_some() => {
                        return Err(ApiError::bad_request(
                            ErrorCode::InvalidMultipart,
                            format!(
                                "unexpected file part `{other}`: send `image` parts and `mask` \
                                 parts"
                            ),
                        ));
                    }
                    _ => fields.push((part, plain_text(&bytes)?)),
                }
            }
            let request = one_of(request, &fields, EvalRequest::from_fields)?;
            if !request.images.is_empty() {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidMultipart,
                    "send the images as `image` parts, not inside `request`",
                ));
            }
            for (name, bytes) in masks {
                let image = images
                    .iter_mut()
                    .find(|(image, _, _)| stem(image) == stem(&name))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            ErrorCode::InvalidMultipart,
                            format!("mask `{name}` matches no image (by name without extension)"),
                        )
                    })?;
                if image.2.replace(bytes).is_some() {
                    return Err(ApiError::bad_request(
                        ErrorCode::InvalidMultipart,
                        format!("two masks for image `{}`", image.0),
                    ));
                }
            }
            request
        } else {
            return Err(unsupported(&content_type));
        };
        if images.is_empty() {
            return Err(ApiError::bad_request(
                ErrorCode::MissingImage,
                "the evaluation has no images",
            ));
        }
        let mut names = std::collections::HashSet::new();
        if let Some((name, _, _)) = images.iter().find(|(name, _, _)| !names.insert(name)) {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidParameter,
                format!("two images are called `{name}`"),
            ));
        }
        Ok(Self { request, images })
    }
}

/// A body that could not be read to its end: the client stopped sending, or sent slower than
/// `--body-timeout` (the server's reading never fails by itself).
fn cut_off_body() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        ErrorCode::InvalidBody,
        "the body stopped before its end: cut off, or sent slower than this server waits for",
    )
}

fn multipart_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, ErrorCode::PayloadTooLarge, text)
    } else if status.is_server_error() {
        cut_off_body()
    } else {
        ApiError::new(status, ErrorCode::InvalidMultipart, text)
    }
}

fn body_error(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(status, ErrorCode::PayloadTooLarge, rejection.body_text());
    }
    if matches!(
        rejection,
        axum::extract::rejection::BytesRejection::FailedToBufferBody(_)
    ) {
        return cut_off_body();
    }
    ApiError::new(status, ErrorCode::InvalidBody, rejection.body_text())
}

/// What `POST /v1/explain` makes of a body of `content_type` for `model` within `limits`:
/// the server's own parsing and checks, before any image is decoded (the request fuzz target's
/// entry point). The error is the message the client would read.
pub fn parse_explain_request(
    content_type: &str,
    body: Vec<u8>,
    model: &LoadedModel,
    limits: &Limits,
) -> Result<ExplainConfig, String> {
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/explain")
        .header(header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from(body))
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    let submission = runtime
        .block_on(Submission::<ExplainRequest>::from_request(request, &()))
        .map_err(|e| e.detail.message)?;
    check_config(&submission.request.config, model, limits).map_err(|e| e.detail.message)?;
    Ok(submission.request.config)
}

/// A model by name, or 400 naming the served ones.
pub fn find_model(state: &AppState, name: &str) -> Result<Arc<LoadedModel>, ApiError> {
    state
        .models
        .iter()
        .find(|m| m.name == name)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = state.models.iter().map(|m| m.name.as_str()).collect();
            ApiError::bad_request(
                ErrorCode::UnknownModel,
                format!(
                    "unknown model `{name}`; served models: {}",
                    names.join(", ")
                ),
            )
        })
}

/// Check a configuration against the model ([`camlime_core::explanation::validate`]) and the
/// server's limits.
pub fn check_config(
    config: &ExplainConfig,
    model: &LoadedModel,
    limits: &Limits,
) -> Result<(), ApiError> {
    let samples = config.lime.num_samples;
    if config.method.samples() && samples > limits.max_samples {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidParameter,
            format!(
                "samples must be at most {} on this server, got {samples}",
                limits.max_samples
            ),
        ));
    }
    let attribution = &config.cam.attribution;
    let noise = attribution.noise_tunnel.as_ref().map_or(0, |n| n.samples);
    if attribution.steps > limits.max_steps || noise > limits.max_steps {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidParameter,
            format!(
                "steps and noise samples must be at most {} on this server, got {} and {noise}",
                limits.max_steps, attribution.steps
            ),
        ));
    }
    camlime_core::explanation::validate(&model.classifier, config)?;
    Ok(())
}

/// Why an explanation is too heavy to answer synchronously, if it is.
pub fn heavy(config: &ExplainConfig, limits: &Limits) -> Option<String> {
    let cam_is_heavy = |cam: CamMethod, noise: &Option<NoiseTunnel>| {
        matches!(
            cam,
            CamMethod::ScoreCam | CamMethod::AblationCam | CamMethod::Occlusion
        ) || noise.is_some()
    };
    let noise = &config.cam.attribution.noise_tunnel;
    match config.method {
        Method::Lime | Method::CamLime if config.lime.num_samples > limits.sync_samples => {
            Some(format!(
                "{} samples (synchronous requests take at most {})",
                config.lime.num_samples, limits.sync_samples
            ))
        }
        Method::CamLime if cam_is_heavy(config.cam.method, noise) => {
            Some(format!("CamLIME guided by {}", config.cam.method))
        }
        Method::Cam(cam) if cam_is_heavy(cam, noise) => Some(cam.name().to_owned()),
        _ => None,
    }
}
