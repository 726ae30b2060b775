//! The answers: chat completions and responses, as one JSON object or as SSE in the order the
//! official SDKs' parsers and stream helpers need.
//!
//! Chat stream: a role chunk, content deltas, exactly one finish chunk, with
//! `stream_options.include_usage` a usage chunk with `choices: []` (every chunk before it has
//! `usage: null`), then `data: [DONE]`; the same `id`, `created` and `model` in every chunk. A
//! failure mid-stream is `data: {"error": ...}`, then `[DONE]`.
//!
//! Responses stream: `response.created`, `response.in_progress`, per agent message
//! `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`s,
//! `response.output_text.done`, `response.content_part.done`, `response.output_item.done`, then
//! `response.completed` with the whole response and its usage (or `response.failed`); every
//! event has `type` and a `sequence_number` counting from 0.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::api::TurnRequest;
use crate::body::{sse_data, sse_done, sse_event, sse_keepalive};
use crate::error::ApiError;
use crate::run::{Event, Finished, Usage};

fn chat_usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.total,
        "prompt_tokens_details": { "cached_tokens": u.cached },
        "completion_tokens_details": { "reasoning_tokens": u.reasoning }
    })
}

fn responses_usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": { "cached_tokens": u.cached },
        "output_tokens": u.output,
        "output_tokens_details": { "reasoning_tokens": u.reasoning },
        "total_tokens": u.total
    })
}

/// A chat completion.
pub fn chat_completion(id: &str, created: u64, model: &str, f: &Finished) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": f.messages.join("\n\n"), "refusal": null },
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": chat_usage(&f.usage)
    })
}

/// The ids of a response's message items.
pub fn message_id(response_id: &str, index: usize) -> String {
    format!("msg_{}_{index}", response_id.trim_start_matches("resp_"))
}

fn message_item(response_id: &str, index: usize, text: &str, status: &str) -> Value {
    json!({
        "id": message_id(response_id, index),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{ "type": "output_text", "text": text, "annotations": [], "logprobs": [] }]
    })
}

/// A response object (`status` in_progress, completed or failed).
pub fn response_object(
    id: &str,
    created: u64,
    req: &TurnRequest,
    status: &str,
    finished: Option<&Finished>,
    error: Option<&ApiError>,
) -> Value {
    let output: Vec<Value> = finished
        .map(|f| f.messages.iter().enumerate().map(|(i, t)| message_item(id, i, t, "completed")).collect())
        .unwrap_or_default();
    let mut o = Map::new();
    o.insert("id".into(), json!(id));
    o.insert("object".into(), json!("response"));
    o.insert("created_at".into(), json!(created));
    o.insert("status".into(), json!(status));
    o.insert("model".into(), json!(req.model.id));
    o.insert("output".into(), Value::Array(output));
    o.insert("output_text".into(), json!(finished.map(|f| f.messages.join("\n\n")).unwrap_or_default()));
    o.insert("previous_response_id".into(), json!(req.previous_response_id));
    o.insert("store".into(), json!(req.store));
    o.insert("error".into(), error.map(|e| json!({ "code": e.code, "message": e.message })).unwrap_or(Value::Null));
    o.insert("incomplete_details".into(), Value::Null);
    o.insert("instructions".into(), req.echo.get("instructions").cloned().unwrap_or(Value::Null));
    o.insert("metadata".into(), req.echo.get("metadata").cloned().unwrap_or(json!({})));
    o.insert("parallel_tool_calls".into(), req.echo.get("parallel_tool_calls").cloned().unwrap_or(json!(false)));
    o.insert("temperature".into(), req.echo.get("temperature").cloned().unwrap_or(Value::Null));
    o.insert("top_p".into(), req.echo.get("top_p").cloned().unwrap_or(Value::Null));
    o.insert("max_output_tokens".into(), req.echo.get("max_output_tokens").cloned().unwrap_or(Value::Null));
    o.insert("tool_choice".into(), json!("auto"));
    o.insert("tools".into(), json!([]));
    o.insert("reasoning".into(), json!({ "effort": req.effort, "summary": null }));
    o.insert("text".into(), req.echo.get("text").cloned().unwrap_or(json!({ "format": { "type": "text" } })));
    o.insert("user".into(), req.echo.get("user").cloned().unwrap_or(Value::Null));
    o.insert("usage".into(), finished.map(|f| responses_usage(&f.usage)).unwrap_or(Value::Null));
    Value::Object(o)
}

/// Writes SSE frames; `false` once the client went away.
struct Writer {
    tx: mpsc::Sender<Bytes>,
    sent_since_tick: bool,
}

impl Writer {
    async fn send(&mut self, b: Bytes) -> bool {
        self.sent_since_tick = true;
        self.tx.send(b).await.is_ok()
    }
}

/// Reads the runner's events, sending keepalive comments when nothing else was sent for
/// `keepalive`; `None` when the client went away.
async fn next_event(events: &mut mpsc::Receiver<Event>, w: &mut Writer, keepalive: Duration) -> Option<Event> {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    loop {
        tokio::select! {
            e = events.recv() => return e,
            _ = tick.tick() => {
                if !w.sent_since_tick && !w.send(sse_keepalive()).await {
                    return None;
                }
                w.sent_since_tick = false;
            }
            _ = w.tx.closed() => return None,
        }
    }
}

/// What a stream writer needs: the runner's events, the body's sender, the answer's id and
/// creation time, the request, the keepalive interval.
pub struct Sse {
    /// The runner's events.
    pub events: mpsc::Receiver<Event>,
    /// The body.
    pub tx: mpsc::Sender<Bytes>,
    /// `chatcmpl-...` or `resp_...`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The request.
    pub req: TurnRequest,
    /// Keepalive interval.
    pub keepalive: Duration,
}

/// Streams a chat completion.
pub async fn chat_stream(sse: Sse) {
    let Sse { mut events, tx, id, created, req, keepalive } = sse;
    let mut w = Writer { tx, sent_since_tick: false };
    let model = req.model.id.clone();
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": null,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]
        });
        if req.include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    if !w.send(sse_data(&chunk(json!({ "role": "assistant", "content": "" }), Value::Null))).await {
        return;
    }
    let mut last_index = 0;
    loop {
        let Some(e) = next_event(&mut events, &mut w, keepalive).await else { return };
        match e {
            Event::Delta { index, delta } => {
                let text = if index != last_index { format!("\n\n{delta}") } else { delta };
                last_index = index;
                if !w.send(sse_data(&chunk(json!({ "content": text }), Value::Null))).await {
                    return;
                }
            }
            Event::Done(Ok(f)) => {
                if !w.send(sse_data(&chunk(json!({}), json!("stop")))).await {
                    return;
                }
                if req.include_usage {
                    let u = json!({
                        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                        "system_fingerprint": null, "choices": [], "usage": chat_usage(&f.usage)
                    });
                    if !w.send(sse_data(&u)).await {
                        return;
                    }
                }
                let _ = w.send(sse_done()).await;
                return;
            }
            Event::Done(Err(e)) => {
                if w.send(sse_data(&e.body())).await {
                    let _ = w.send(sse_done()).await;
                }
                return;
            }
        }
    }
}

/// Streams a response.
pub async fn responses_stream(sse: Sse) {
    let Sse { mut events, tx, id, created, req, keepalive } = sse;
    let mut w = Writer { tx, sent_since_tick: false };
    let mut seq: u64 = 0;
    let mut frame = |kind: &str, mut v: Value| {
        v["type"] = json!(kind);
        v["sequence_number"] = json!(seq);
        seq += 1;
        sse_event(kind, &v)
    };
    let initial = response_object(&id, created, &req, "in_progress", None, None);
    if !w.send(frame("response.created", json!({ "response": initial }))).await
        || !w.send(frame("response.in_progress", json!({ "response": initial }))).await
    {
        return;
    }
    // The open message: (index, text so far).
    let mut open: Option<(usize, String)> = None;
    let close = |frame: &mut dyn FnMut(&str, Value) -> Bytes, index: usize, text: &str| -> Vec<Bytes> {
        let item_id = message_id(&id, index);
        let part = json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] });
        vec![
            frame(
                "response.output_text.done",
                json!({ "item_id": item_id, "output_index": index, "content_index": 0, "text": text, "logprobs": [] }),
            ),
            frame(
                "response.content_part.done",
                json!({ "item_id": item_id, "output_index": index, "content_index": 0, "part": part }),
            ),
            frame(
                "response.output_item.done",
                json!({ "output_index": index, "item": message_item(&id, index, text, "completed") }),
            ),
        ]
    };
    loop {
        let Some(e) = next_event(&mut events, &mut w, keepalive).await else { return };
        match e {
            Event::Delta { index, delta } => {
                let mut frames = Vec::new();
                if open.as_ref().is_none_or(|(i, _)| *i != index) {
                    if let Some((i, text)) = open.take() {
                        frames.extend(close(&mut frame, i, &text));
                    }
                    let item = json!({
                        "id": message_id(&id, index), "type": "message", "status": "in_progress",
                        "role": "assistant", "content": []
                    });
                    frames.push(frame("response.output_item.added", json!({ "output_index": index, "item": item })));
                    frames.push(frame(
                        "response.content_part.added",
                        json!({
                            "item_id": message_id(&id, index), "output_index": index, "content_index": 0,
                            "part": { "type": "output_text", "text": "", "annotations": [], "logprobs": [] }
                        }),
                    ));
                    open = Some((index, String::new()));
                }
                if let Some((_, text)) = open.as_mut() {
                    text.push_str(&delta);
                }
                frames.push(frame(
                    "response.output_text.delta",
                    json!({
                        "item_id": message_id(&id, index), "output_index": index, "content_index": 0,
                        "delta": delta, "logprobs": []
                    }),
                ));
                for f in frames {
                    if !w.send(f).await {
                        return;
                    }
                }
            }
            Event::Done(result) => {
                let mut frames = Vec::new();
                if let Some((i, _)) = open.take() {
                    let text = match &result {
                        Ok(f) => f.messages.get(i).cloned().unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    frames.extend(close(&mut frame, i, &text));
                }
                match &result {
                    Ok(f) => {
                        let r = response_object(&id, created, &req, "completed", Some(f), None);
                        frames.push(frame("response.completed", json!({ "response": r })));
                    }
                    Err(e) => {
                        let r = response_object(&id, created, &req, "failed", None, Some(e));
                        frames.push(frame("response.failed", json!({ "response": r })));
                    }
                }
                for f in frames {
                    if !w.send(f).await {
                        return;
                    }
                }
                return;
            }
        }
    }
}
