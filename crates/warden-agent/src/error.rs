//! The errors of talking to a worker.
//!
//! Guarantees: every [`AgentError`] names the request (method) it concerns where there is one,
//! is `Clone` (one end of a connection fails every waiting request with the same error), and
//! tells a retryable refusal ([`AgentError::is_retryable`]) from the rest.

use std::time::Duration;

/// JSON-RPC error code of an overloaded app-server ("Server overloaded; retry later.").
pub const OVERLOADED: i64 = -32001;
/// JSON-RPC error code of an invalid request (also what Codex answers before `initialize`).
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC error code warden answers server requests it cannot serve with.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC error code warden answers a server request with when its handler failed.
pub const INTERNAL_ERROR: i64 = -32603;

/// Why a request to a worker, or the connection itself, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A request before the `initialize` handshake finished (refused locally, or the worker
    /// answered `"Not initialized"`).
    #[error("{method} was sent before the worker was initialized: call initialize first")]
    NotInitialized {
        /// The refused request.
        method: String,
    },
    /// The worker answered `-32001` (overloaded): the same request may succeed later.
    #[error("the worker is overloaded and refused {method} (code -32001); retry later")]
    Overloaded {
        /// The refused request.
        method: String,
    },
    /// No answer (or, for a turn's event stream, no event) within the time allowed.
    #[error("{method}: no answer from the worker within {after:?}")]
    Timeout {
        /// The request, or `turn events of <thread>/<turn>` for a turn's stream.
        method: String,
        /// The time allowed.
        after: Duration,
    },
    /// The worker's stdout ended (it exited or closed it).
    #[error("the worker exited (its stdout ended){}", pending.as_ref().map(|m| format!(" before answering {m}")).unwrap_or_default())]
    WorkerExited {
        /// The request that was waiting, if any.
        pending: Option<String>,
    },
    /// The worker broke the protocol: a line over the size cap (the connection is closed), an
    /// answer with neither `result` nor `error`, a result without the fields the method needs.
    #[error("protocol error from the worker: {0}")]
    Protocol(String),
    /// The worker answered with a JSON-RPC error.
    #[error("the worker refused {method}: {message} (code {code})")]
    Rpc {
        /// The refused request.
        method: String,
        /// The JSON-RPC error code.
        code: i64,
        /// The worker's message.
        message: String,
    },
    /// A turn's event stream was not read fast enough and was dropped by the connection.
    #[error("the event stream of thread {thread} fell more than {capacity} notifications behind and was dropped")]
    Lagged {
        /// The thread.
        thread: String,
        /// The subscription's buffer.
        capacity: usize,
    },
    /// Too many requests are waiting for answers on this connection; this one was not sent.
    #[error("{limit} requests are already waiting for the worker; {method} was not sent (retry later)")]
    TooManyRequests {
        /// The request not sent.
        method: String,
        /// The connection's bound on waiting requests.
        limit: usize,
    },
    /// Every worker of the pool is busy and the request waited (or could not wait) in vain.
    #[error("every worker is busy (waited {waited:?}); retry later")]
    Busy {
        /// How long a request may wait.
        waited: Duration,
    },
    /// No worker of the pool is ready (starting, restarting, or stopped after too many restarts).
    #[error("no worker is ready; retry later")]
    NotReady,
    /// The caller's parameters cannot be sent as they are.
    #[error("cannot send {method}: {reason}")]
    InvalidParams {
        /// The request.
        method: String,
        /// What is wrong.
        reason: String,
    },
}

impl AgentError {
    /// A stable snake_case code for this kind of error (what a gateway puts in its error
    /// bodies): `worker_busy` and `worker_exited` as the pool's errors are named elsewhere.
    pub fn code(&self) -> &'static str {
        match self {
            AgentError::NotInitialized { .. } => "worker_not_initialized",
            AgentError::Overloaded { .. } => "worker_overloaded",
            AgentError::Timeout { .. } => "worker_timeout",
            AgentError::WorkerExited { .. } => "worker_exited",
            AgentError::Protocol(_) => "worker_protocol_error",
            AgentError::Rpc { .. } => "worker_error",
            AgentError::Lagged { .. } => "events_lagged",
            AgentError::TooManyRequests { .. } => "too_many_requests",
            AgentError::Busy { .. } => "worker_busy",
            AgentError::NotReady => "worker_not_ready",
            AgentError::InvalidParams { .. } => "invalid_params",
        }
    }

    /// Whether the same request may succeed if sent again later (to this worker or another):
    /// [`AgentError::Overloaded`], [`AgentError::TooManyRequests`], [`AgentError::Busy`] and
    /// [`AgentError::NotReady`].
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AgentError::Overloaded { .. }
                | AgentError::TooManyRequests { .. }
                | AgentError::Busy { .. }
                | AgentError::NotReady
        )
    }

    /// The error a JSON-RPC error answer to `method` means.
    pub fn from_rpc(method: &str, code: i64, message: &str) -> AgentError {
        match code {
            OVERLOADED => AgentError::Overloaded { method: method.to_owned() },
            INVALID_REQUEST if message == "Not initialized" => AgentError::NotInitialized { method: method.to_owned() },
            _ => AgentError::Rpc { method: method.to_owned(), code, message: message.to_owned() },
        }
    }

    /// The same error as seen by a request for `method` that was waiting when it happened.
    pub(crate) fn for_pending(&self, method: &str) -> AgentError {
        match self {
            AgentError::WorkerExited { pending: None } => AgentError::WorkerExited { pending: Some(method.to_owned()) },
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_map_to_their_kinds() {
        assert_eq!(
            AgentError::from_rpc("turn/start", -32001, "Server overloaded; retry later."),
            AgentError::Overloaded { method: "turn/start".into() }
        );
        assert!(AgentError::from_rpc("turn/start", -32001, "x").is_retryable());
        assert_eq!(
            AgentError::from_rpc("thread/start", -32600, "Not initialized"),
            AgentError::NotInitialized { method: "thread/start".into() }
        );
        let other = AgentError::from_rpc("thread/start", -32600, "Invalid request: unknown variant `on-failure`");
        assert!(matches!(other, AgentError::Rpc { code: -32600, .. }), "{other:?}");
        assert!(!other.is_retryable());
        assert!(!AgentError::WorkerExited { pending: None }.is_retryable());
    }

    #[test]
    fn codes_name_the_pool_errors_as_documented() {
        assert_eq!(AgentError::Busy { waited: Duration::from_secs(1) }.code(), "worker_busy");
        assert_eq!(AgentError::WorkerExited { pending: None }.code(), "worker_exited");
        assert_eq!(AgentError::NotReady.code(), "worker_not_ready");
    }

    #[test]
    fn messages_name_the_request() {
        let e = AgentError::WorkerExited { pending: None }.for_pending("turn/start");
        assert_eq!(e.to_string(), "the worker exited (its stdout ended) before answering turn/start");
        let t = AgentError::Timeout { method: "initialize".into(), after: Duration::from_millis(250) };
        assert_eq!(t.to_string(), "initialize: no answer from the worker within 250ms");
        let p = AgentError::Protocol("x".into());
        assert_eq!(p.for_pending("m"), p);
    }
}
