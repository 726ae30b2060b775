//! One request's turn: a thread started (or a kept one continued) on the pool, its events
//! forwarded to the request's renderer, the turn interrupted when the client goes away or its
//! time is up, the conversation kept or forgotten, one audit record.
//!
//! The runner is a task of its own: the renderer (the handler for a JSON answer, the SSE
//! writer for a stream) holds the receiving end of its channel, so a client that disconnects
//! drops it, and the runner sees the channel close and sends `turn/interrupt` at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use warden_agent::pool::PoolTurn;
use warden_agent::supervisor::LiveWorker;
use warden_agent::turn::{
    self, Checkout, SandboxMode, ThreadId, ThreadParams, TokenBreakdown, TurnEvent, TurnParams, TurnStatus, UserInput,
};
use warden_session::fields;

use crate::api::TurnRequest;
use crate::error::ApiError;
use crate::State;

/// Token counts of one turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens.
    pub input: u64,
    /// Of which cached.
    pub cached: u64,
    /// Output tokens.
    pub output: u64,
    /// Of which reasoning.
    pub reasoning: u64,
    /// Input plus output.
    pub total: u64,
}

impl Usage {
    fn between(before: TokenBreakdown, after: TokenBreakdown) -> Usage {
        let input = after.input_tokens.saturating_sub(before.input_tokens);
        let output = after.output_tokens.saturating_sub(before.output_tokens);
        Usage {
            input,
            cached: after.cached_input_tokens.saturating_sub(before.cached_input_tokens),
            output,
            reasoning: after.reasoning_output_tokens.saturating_sub(before.reasoning_output_tokens),
            total: input + output,
        }
    }
}

/// What the runner tells the renderer.
#[derive(Debug)]
pub enum Event {
    /// Text of the agent message `index` (0, 1, ... in the order they started).
    Delta {
        /// Which message.
        index: usize,
        /// The text.
        delta: String,
    },
    /// The turn's end.
    Done(Result<Finished, ApiError>),
}

/// A completed turn.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The agent messages' final texts, in order.
    pub messages: Vec<String>,
    /// Its tokens.
    pub usage: Usage,
}

/// What a request is, for the runner's records.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// `X-Request-Id`.
    pub request_id: String,
    /// `chat.completions` or `responses`.
    pub route: &'static str,
    /// The client key's name (`None` without auth).
    pub key: Option<String>,
    /// The id of the response (`chatcmpl-...`, `resp_...`).
    pub response_id: String,
    /// When the request arrived.
    pub started: Instant,
}

/// A conversation kept for `previous_response_id`.
#[derive(Clone)]
pub struct Kept {
    worker: Arc<LiveWorker>,
    thread: ThreadId,
    total: TokenBreakdown,
    key: Option<String>,
}

impl Kept {
    /// Tells the worker to forget the thread (an expired or evicted conversation).
    pub fn forget(self) {
        unsubscribe_in_background(self.worker, self.thread);
    }
}

enum Outcome {
    Completed(Finished),
    Failed(ApiError),
    /// The client went away.
    Aborted,
}

/// Ends a turn that no one reads any more: interrupts it and drains its events (bounded), so
/// its slot is released only when the worker stopped working on it; with `forget`, then tells
/// the worker to forget the thread.
fn interrupt_in_background(mut pt: PoolTurn, forget: bool) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), pt.stream.interrupt()).await;
        let drain = async {
            // Bounded: the stream ends at Completed or its first error.
            while let Some(Ok(e)) = pt.next().await {
                if matches!(e, TurnEvent::Completed { .. }) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
        if forget {
            let _ = turn::unsubscribe(&pt.worker.conn, pt.stream.thread_id()).await;
        }
    });
}

fn unsubscribe_in_background(worker: Arc<LiveWorker>, thread: ThreadId) {
    tokio::spawn(async move {
        let _ = turn::unsubscribe(&worker.conn, &thread).await;
    });
}

/// Runs `req`'s turn and sends its events to `tx`; the last is [`Event::Done`].
pub async fn run(state: Arc<State>, req: TurnRequest, ctx: RequestCtx, tx: mpsc::Sender<Event>) {
    let deadline = tokio::time::Instant::from_std(ctx.started + state.settings.timeout);
    let mut thread_label = String::new();
    let mut worker_label = String::new();
    let outcome = drive(&state, &req, &ctx, &tx, deadline, &mut thread_label, &mut worker_label).await;
    let (status, code, usage, outcome_name) = match &outcome {
        Outcome::Completed(f) => (200u16, "", f.usage, "completed"),
        Outcome::Failed(e) => (e.status.as_u16(), e.code, Usage::default(), "failed"),
        Outcome::Aborted => (499, "request_aborted", Usage::default(), "aborted"),
    };
    let micros = u64::try_from(ctx.started.elapsed().as_micros()).unwrap_or(u64::MAX);
    state.metrics.request(ctx.route, status, micros);
    state.metrics.input_tokens.fetch_add(usage.input, Ordering::Relaxed);
    state.metrics.output_tokens.fetch_add(usage.output, Ordering::Relaxed);
    if matches!(outcome, Outcome::Aborted) {
        state.metrics.disconnects.fetch_add(1, Ordering::Relaxed);
    }
    state.recorder.record(
        "serve.request",
        fields([
            ("request_id", json!(ctx.request_id)),
            ("route", json!(ctx.route)),
            ("client_key", json!(ctx.key)),
            ("model", json!(req.model.id)),
            ("response_id", json!(ctx.response_id)),
            ("previous_response_id", json!(req.previous_response_id)),
            ("thread", json!(thread_label)),
            ("worker", json!(worker_label)),
            ("stream", json!(req.stream)),
            ("status", json!(status)),
            ("outcome", json!(outcome_name)),
            ("code", if code.is_empty() { Value::Null } else { json!(code) }),
            ("input_tokens", json!(usage.input)),
            ("output_tokens", json!(usage.output)),
            ("total_tokens", json!(usage.total)),
            ("duration_ms", json!(micros / 1000)),
        ]),
    );
    let done = match outcome {
        Outcome::Completed(f) => Ok(f),
        Outcome::Failed(e) => Err(e),
        Outcome::Aborted => return,
    };
    let _ = tx.send(Event::Done(done)).await;
}

async fn drive(
    state: &Arc<State>,
    req: &TurnRequest,
    ctx: &RequestCtx,
    tx: &mpsc::Sender<Event>,
    deadline: tokio::time::Instant,
    thread_label: &mut String,
    worker_label: &mut String,
) -> Outcome {
    let s = &state.settings;
    let mut input = req.input.clone();
    let mut before = TokenBreakdown::default();
    // The conversation continued, if any: its key stays checked out until the turn ends.
    let mut continued: Option<(String, Kept)> = None;
    if let Some(prev) = &req.previous_response_id {
        match state.threads.checkout(prev) {
            Checkout::Ready(k) if k.key == ctx.key => {
                before = k.total;
                if let Some(d) = &req.developer_instructions {
                    input = format!("[developer]\n{d}\n\n[user]\n{input}");
                }
                continued = Some((prev.clone(), k));
            }
            Checkout::Ready(_) => {
                state.threads.checkin(prev);
                return Outcome::Failed(ApiError::previous_response_not_found(prev, "unknown or expired"));
            }
            Checkout::Busy => {
                return Outcome::Failed(ApiError {
                    status: http::StatusCode::CONFLICT,
                    message: format!("a turn of the conversation {prev:?} is still running; retry when it ends"),
                    kind: "invalid_request_error",
                    param: Some("previous_response_id".into()),
                    code: "conversation_busy",
                    retry_after: Some(1),
                })
            }
            Checkout::Unknown => {
                return Outcome::Failed(ApiError::previous_response_not_found(prev, "unknown or expired"))
            }
        }
    }
    let params = TurnParams {
        input: vec![UserInput::Text(input)],
        effort: req.effort.clone(),
        output_schema: req.output_schema.clone(),
        idle_timeout: s.idle_timeout,
    };
    let start = async {
        match &continued {
            Some((_, k)) => state.pool.turn_on(&k.worker, &k.thread, params).await,
            None => {
                let thread = ThreadParams {
                    cwd: state.cwd.clone(),
                    // warden is the sandbox; Codex's own is off inside it.
                    sandbox: SandboxMode::DangerFullAccess,
                    approval_policy: state.approval,
                    developer_instructions: req.developer_instructions.clone(),
                    model: req.model.codex_model.clone(),
                    ephemeral: true,
                };
                state.pool.turn(&thread, params).await
            }
        }
    };
    let started = tokio::select! {
        biased;
        _ = tx.closed() => Err(None),
        r = tokio::time::timeout_at(deadline, start) => match r {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(Some(e)),
            Err(_) => Err(Some(warden_agent::AgentError::Busy { waited: s.timeout })),
        },
    };
    let mut pt = match started {
        Ok(t) => t,
        Err(e) => {
            if let Some((prev, _)) = &continued {
                match e {
                    Some(warden_agent::AgentError::WorkerExited { .. }) => {
                        state.threads.remove(prev);
                        return Outcome::Failed(ApiError::previous_response_not_found(
                            prev,
                            "the worker that held the conversation restarted",
                        ));
                    }
                    _ => state.threads.checkin(prev),
                }
            }
            return match e {
                None => Outcome::Aborted,
                Some(e) => Outcome::Failed(ApiError::from_agent(&e)),
            };
        }
    };
    *thread_label = pt.stream.thread_id().to_string();
    worker_label.clone_from(&pt.worker.name);
    let worker = pt.worker.clone();
    let thread = pt.stream.thread_id().clone();
    let turn_deadline = deadline.min(tokio::time::Instant::now() + s.request_timeout);
    let mut messages: Vec<(String, String, bool)> = Vec::new();
    let index_of = |messages: &mut Vec<(String, String, bool)>, id: &str| match messages.iter().position(|m| m.0 == id)
    {
        Some(i) => i,
        None => {
            messages.push((id.to_owned(), String::new(), false));
            messages.len() - 1
        }
    };
    let mut total_after = before;
    let result: Result<(), Option<ApiError>> = loop {
        let e = tokio::select! {
            biased;
            _ = tx.closed() => break Err(None),
            _ = tokio::time::sleep_until(turn_deadline) => break Err(Some(ApiError::request_timeout(s.request_timeout))),
            e = pt.next() => e,
        };
        match e {
            None => break Err(Some(ApiError::internal("the turn's events ended before turn/completed"))),
            Some(Err(e)) => break Err(Some(ApiError::from_agent(&e))),
            Some(Ok(TurnEvent::TextDelta { item_id, delta })) => {
                let i = index_of(&mut messages, &item_id);
                messages[i].1.push_str(&delta);
                messages[i].2 = true;
                if tx.send(Event::Delta { index: i, delta }).await.is_err() {
                    break Err(None);
                }
            }
            Some(Ok(TurnEvent::ItemCompleted(item))) if item.kind == "agentMessage" => {
                let text = item.text().unwrap_or_default().to_owned();
                let i = index_of(&mut messages, &item.id);
                if !messages[i].2
                    && !text.is_empty()
                    && tx.send(Event::Delta { index: i, delta: text.clone() }).await.is_err()
                {
                    break Err(None);
                }
                messages[i].1 = text;
                messages[i].2 = true;
            }
            Some(Ok(TurnEvent::TokenUsage(u))) => total_after = u.total,
            Some(Ok(TurnEvent::Completed { status, error, usage })) => {
                if let Some(u) = usage {
                    total_after = u.total;
                }
                break match status {
                    TurnStatus::Completed => Ok(()),
                    TurnStatus::Failed => Err(Some(ApiError::turn_failed(
                        error.as_ref().map_or("the turn failed", |e| e.message.as_str()),
                    ))),
                    TurnStatus::Interrupted => Err(Some(ApiError::internal("the worker interrupted the turn"))),
                    other => Err(Some(ApiError::internal(format!("the turn ended with status {other:?}")))),
                };
            }
            Some(Ok(_)) => {}
        }
    };
    let completed = result.is_ok();
    let turn_open = matches!(&result, Err(None) | Err(Some(ApiError { code: "worker_request_timeout", .. })));
    if turn_open {
        interrupt_in_background(pt, continued.is_none());
    } else {
        drop(pt);
    }
    // The conversation: kept under the new response id, or forgotten.
    let keep = completed && req.store && ctx.route == "responses";
    let worker_gone = !worker.conn.is_open();
    if let Some((prev, _)) = &continued {
        if keep || worker_gone || !req.store {
            state.threads.remove(prev);
        } else {
            state.threads.checkin(prev);
        }
    }
    if keep {
        let kept = Kept { worker: worker.clone(), thread: thread.clone(), total: total_after, key: ctx.key.clone() };
        for (_, old) in state.threads.insert_busy(&ctx.response_id, kept) {
            unsubscribe_in_background(old.worker, old.thread);
        }
        state.threads.checkin(&ctx.response_id);
    } else if !worker_gone && (continued.is_none() || !req.store) && !turn_open {
        unsubscribe_in_background(worker, thread);
    }
    match result {
        Ok(()) => Outcome::Completed(Finished {
            messages: messages.into_iter().map(|m| m.1).collect(),
            usage: Usage::between(before, total_after),
        }),
        Err(None) => Outcome::Aborted,
        Err(Some(e)) => Outcome::Failed(e),
    }
}
