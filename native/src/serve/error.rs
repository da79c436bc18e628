//! Every error the server answers is JSON: `{"error": {"code": "...", "message": "..."}}` with a
//! 4xx status for the client's mistakes and 5xx for ours. Rejections that axum and tower-http
//! write as plain text (unknown route, wrong method, body too large) are rewritten into the same
//! shape by [`json_errors`].

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// Every error code the server answers with (`error.code`), listed in the OpenAPI document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is wrong in a way no other code names.
    BadRequest,
    /// The job was cancelled (DELETE), or the work stopped.
    Cancelled,
    /// An evaluation's method failed on an image.
    EvaluationFailed,
    /// The token may not do this (a user's token on an admin's endpoint).
    Forbidden,
    /// The image declares more pixels than `--max-pixels`.
    ImageTooLarge,
    /// A fault of ours (a panic in the work).
    InternalError,
    /// The server stopped while the job ran.
    Interrupted,
    /// The body could not be read.
    InvalidBody,
    /// The image does not decode.
    InvalidImage,
    /// The JSON does not parse or does not fit the schema.
    InvalidJson,
    /// A mask does not decode or does not fit its image.
    InvalidMask,
    /// The form's parts are wrong.
    InvalidMultipart,
    /// A setting outside its range, or one the server's limits refuse.
    InvalidParameter,
    /// No job has that id.
    JobNotFound,
    /// The route has no such HTTP method.
    MethodNotAllowed,
    /// The request has no image.
    MissingImage,
    /// A localisation metric needs a mask the request lacks.
    MissingMask,
    /// The model failed.
    ModelError,
    /// No such route.
    NotFound,
    /// The body is over `--max-body`.
    PayloadTooLarge,
    /// The job queue is full.
    QueueFull,
    /// The token has its quota of jobs queued or running.
    QuotaExceeded,
    /// The server is stopping.
    ShuttingDown,
    /// The job ran past `--job-timeout`.
    Timeout,
    /// Synchronous work is at its limit.
    TooManyRequests,
    /// The request has no token, or one the server does not know.
    Unauthorized,
    /// No such explanation method.
    UnknownMethod,
    /// The server serves no such model.
    UnknownModel,
    /// The model has no such layer.
    UnknownLayer,
    /// The Content-Type is neither JSON nor a form.
    UnsupportedMediaType,
    /// The work is too heavy to answer synchronously: submit it as a job.
    UseJobs,
}

impl ErrorCode {
    /// The code as JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Cancelled => "cancelled",
            Self::EvaluationFailed => "evaluation_failed",
            Self::Forbidden => "forbidden",
            Self::ImageTooLarge => "image_too_large",
            Self::InternalError => "internal_error",
            Self::Interrupted => "interrupted",
            Self::InvalidBody => "invalid_body",
            Self::InvalidImage => "invalid_image",
            Self::InvalidJson => "invalid_json",
            Self::InvalidMask => "invalid_mask",
            Self::InvalidMultipart => "invalid_multipart",
            Self::InvalidParameter => "invalid_parameter",
            Self::JobNotFound => "job_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::MissingImage => "missing_image",
            Self::MissingMask => "missing_mask",
            Self::ModelError => "model_error",
            Self::NotFound => "not_found",
            Self::PayloadTooLarge => "payload_too_large",
            Self::QueueFull => "queue_full",
            Self::QuotaExceeded => "quota_exceeded",
            Self::ShuttingDown => "shutting_down",
            Self::Timeout => "timeout",
            Self::TooManyRequests => "too_many_requests",
            Self::Unauthorized => "unauthorized",
            Self::UnknownMethod => "unknown_method",
            Self::UnknownModel => "unknown_model",
            Self::UnknownLayer => "unknown_layer",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::UseJobs => "use_jobs",
        }
    }
}

/// A machine-readable code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code.
    pub code: ErrorCode,
    /// What was expected and what was found.
    pub message: String,
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The body's code and message.
    pub detail: ErrorDetail,
    /// Seconds after which the client may try again (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            detail: ErrorDetail {
                code,
                message: message.into(),
            },
            retry_after: None,
        }
    }

    /// The same error, telling the client to try again after `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400 with a code.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl From<camlime_core::Error> for ApiError {
    fn from(error: camlime_core::Error) -> Self {
        use camlime_core::Error as E;
        let message = error.to_string();
        let (status, code) = match error {
            E::Decode(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidImage),
            E::ImageTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::ImageTooLarge),
            E::UnknownLayer { .. } => (StatusCode::BAD_REQUEST, ErrorCode::UnknownLayer),
            E::Parameter(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidParameter),
            E::Cancelled => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Cancelled),
            E::Model(_) | E::Inference(_) | E::Manifest(_) | E::Unsupported(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::ModelError)
            }
        };
        Self::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(ErrorBody { error: self.detail })).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The code of a status that arrives without one.
fn status_code_name(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::Timeout,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::TooManyRequests,
        s if s.is_client_error() => ErrorCode::BadRequest,
        _ => ErrorCode::InternalError,
    }
}

/// Middleware: rewrite every non-JSON error response into an [`ErrorBody`], keeping the status
/// and the other headers (`Allow`, `Retry-After`).
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let body = ErrorBody {
        error: ErrorDetail {
            code: status_code_name(status),
            message,
        },
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    Response::from_parts(parts, Body::from(bytes))
}
