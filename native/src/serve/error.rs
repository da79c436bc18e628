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

/// A machine-readable code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `invalid_image`, `image_too_large`, `unknown_layer`, `queue_full`.
    pub code: String,
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
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            detail: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl From<camlime_core::Error> for ApiError {
    fn from(error: camlime_core::Error) -> Self {
        use camlime_core::Error as E;
        let message = error.to_string();
        let (status, code) = match error {
            E::Decode(_) => (StatusCode::BAD_REQUEST, "invalid_image"),
            E::ImageTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large"),
            E::UnknownLayer { .. } => (StatusCode::BAD_REQUEST, "unknown_layer"),
            E::Parameter(_) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            E::Cancelled => (StatusCode::SERVICE_UNAVAILABLE, "cancelled"),
            E::Model(_) | E::Inference(_) | E::Manifest(_) | E::Unsupported(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "model_error")
            }
        };
        Self::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.detail })).into_response()
    }
}

/// The code of a status that arrives without one.
fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        s if s.is_client_error() => "bad_request",
        _ => "internal_error",
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
            code: status_code_name(status).to_owned(),
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
