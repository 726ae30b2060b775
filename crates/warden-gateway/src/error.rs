//! The OpenAI error envelope: every non-2xx answer is `{"error":{"message","type","param","code"}}`
//! with the status, `Retry-After` where a retry can succeed, and `WWW-Authenticate` on a 401.

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};
use warden_agent::AgentError;

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// `error.message`: for people; never holds a secret or prompt text.
    pub message: String,
    /// `error.type`: `invalid_request_error`, `authentication_error`, `rate_limit_error`,
    /// `server_error`, ...
    pub kind: &'static str,
    /// `error.param`: the request field at fault.
    pub param: Option<String>,
    /// `error.code`: a stable snake_case code.
    pub code: &'static str,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), kind, param: None, code, retry_after: None }
    }

    /// 400 `invalid_request_error` naming `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request_error", message)
            .with_param(param)
    }

    /// 400 `unsupported_parameter` naming `param`.
    pub fn unsupported(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "unsupported_parameter", message)
            .with_param(param)
    }

    /// 400 `invalid_json`.
    pub fn invalid_json(why: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            format!("the request body is not valid JSON: {why}"),
        )
    }

    /// 400 `model_required`.
    pub fn model_required() -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "model_required", "the request names no model")
            .with_param("model")
    }

    /// 404 `model_not_found`.
    pub fn model_not_found(model: &str, served: &[String]) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("the model {model:?} is not served here (served: {})", served.join(", ")),
        )
        .with_param("model")
    }

    /// 404 `previous_response_not_found`.
    pub fn previous_response_not_found(id: &str, why: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "previous_response_not_found",
            format!("previous response {id:?} is not kept here ({why}); send the conversation again as input"),
        )
        .with_param("previous_response_id")
    }

    /// 401 `invalid_api_key`.
    pub fn unauthorized(why: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", "invalid_api_key", why.to_owned())
    }

    /// 404 for a path this server does not have.
    pub fn no_route(method: &http::Method, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            format!("no route {method} {path} (served: POST /v1/chat/completions, POST /v1/responses, GET /v1/models)"),
        )
    }

    /// 405.
    pub fn method_not_allowed(method: &http::Method, path: &str, allowed: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            format!("{method} is not allowed on {path} (allowed: {allowed})"),
        )
    }

    /// 413 `request_entity_too_large`.
    pub fn too_large(cap: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_entity_too_large",
            format!("the request body is over the cap of {cap} bytes"),
        )
    }

    /// 429 with `code` (`concurrency_exceeded`, `rate_limited`, `worker_busy`).
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", code, message).retry(retry_after)
    }

    /// 503 while the server drains at shutdown.
    pub fn draining() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "shutting_down", "the server is shutting down")
            .retry(1)
    }

    /// 504 `worker_request_timeout`.
    pub fn request_timeout(after: Duration) -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            "worker_request_timeout",
            format!(
                "the turn did not complete within {} ms (WORKER_REQUEST_TIMEOUT_MS); it was interrupted",
                after.as_millis()
            ),
        )
    }

    /// 500 `turn_failed`: Codex ended the turn as failed (its message, redacted).
    pub fn turn_failed(message: &str) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "turn_failed",
            format!("the agent's turn failed: {}", warden_audit::redact::redact_str(message)),
        )
    }

    /// 500 `internal_error`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error", message)
    }

    /// The answer a pool or worker error gets.
    pub fn from_agent(e: &AgentError) -> ApiError {
        let msg = warden_audit::redact::redact_str(&e.to_string()).into_owned();
        match e {
            AgentError::Busy { .. } | AgentError::Overloaded { .. } | AgentError::TooManyRequests { .. } => {
                ApiError::too_many("worker_busy", msg, 1)
            }
            AgentError::NotReady => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "worker_not_ready", msg).retry(2)
            }
            AgentError::WorkerExited { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "worker_exited", msg).retry(1)
            }
            AgentError::Timeout { after, .. } => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "idle_timeout",
                format!("the worker sent nothing for {} ms (PROXY_IDLE_TIMEOUT_MS)", after.as_millis()),
            ),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "worker_error", msg),
        }
    }

    /// With `param`.
    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// With `Retry-After: secs`.
    pub fn retry(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// The envelope's `error` object.
    pub fn object(&self) -> Value {
        json!({ "message": self.message, "type": self.kind, "param": self.param, "code": self.code })
    }

    /// The whole body.
    pub fn body(&self) -> Value {
        json!({ "error": self.object() })
    }
}
