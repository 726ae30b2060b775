//! Requests of the OpenAI API mapped onto a Codex turn.
//!
//! - system and developer messages (chat) and `instructions` (responses) become the thread's
//!   developer instructions, never dropped;
//! - earlier messages are rendered into the turn's input as a role-labelled transcript; text
//!   parts are flattened; image, audio and file parts are refused with a 400 naming the part;
//! - `response_format` / `text.format`: `json_schema` is the turn's output schema,
//!   `json_object` a schema for any object; `reasoning_effort` / `reasoning.effort` the effort;
//! - `temperature`, `top_p`, `max_tokens`, `max_completion_tokens`, `max_output_tokens`, `stop`,
//!   penalties, `seed`, `user`, `metadata`, `logit_bias`, `parallel_tool_calls` are accepted and
//!   ignored (Codex chooses its own sampling); unknown fields are ignored too;
//! - `n > 1`, client `tools`, a `tool_choice` that forces a tool, and `tool` messages are
//!   refused (400 `unsupported_parameter` naming the field).

use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::settings::{ModelEntry, EFFORTS};

/// A request, ready for a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRequest {
    /// The model as served (the id the client sent).
    pub model: ModelEntry,
    /// The thread's developer instructions.
    pub developer_instructions: Option<String>,
    /// The turn's input text.
    pub input: String,
    /// The reasoning effort.
    pub effort: Option<String>,
    /// The final message's JSON Schema.
    pub output_schema: Option<Value>,
    /// SSE or one JSON answer.
    pub stream: bool,
    /// Chat: `stream_options.include_usage`.
    pub include_usage: bool,
    /// Responses: the conversation to continue.
    pub previous_response_id: Option<String>,
    /// Responses: whether the conversation is kept for a further request.
    pub store: bool,
    /// Fields echoed in a response object (`instructions`, `temperature`, `metadata`, ...).
    pub echo: Map<String, Value>,
}

fn field<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

fn object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object().ok_or_else(|| ApiError::invalid("", "the request body must be a JSON object"))
}

/// The model the request names, among those served.
pub fn model<'a>(body: &Map<String, Value>, models: &'a [ModelEntry]) -> Result<&'a ModelEntry, ApiError> {
    let id = match field(body, "model") {
        None => return Err(ApiError::model_required()),
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => return Err(ApiError::model_required()),
        Some(_) => return Err(ApiError::invalid("model", "model must be a string")),
    };
    models.iter().find(|m| &m.id == id).ok_or_else(|| {
        let served: Vec<String> = models.iter().map(|m| m.id.clone()).collect();
        ApiError::model_not_found(id, &served)
    })
}

fn boolean(body: &Map<String, Value>, key: &str, default: bool) -> Result<bool, ApiError> {
    match field(body, key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(key, format!("{key} must be a boolean"))),
    }
}

fn effort(v: Option<&Value>, param: &str, model: &ModelEntry) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(model.effort.clone()),
        Some(Value::String(e)) if EFFORTS.contains(&e.as_str()) => Ok(Some(e.clone())),
        Some(other) => {
            Err(ApiError::invalid(param, format!("{param} {other} is not accepted (accepted: {})", EFFORTS.join(", "))))
        }
    }
}

fn no_tools(body: &Map<String, Value>) -> Result<(), ApiError> {
    match field(body, "tools") {
        None => {}
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(_) => {
            return Err(ApiError::unsupported(
                "tools",
                "client tools are not supported: the agent runs its own tools inside warden's sandbox",
            ))
        }
    }
    match field(body, "tool_choice") {
        None => Ok(()),
        Some(Value::String(s)) if s == "none" || s == "auto" => Ok(()),
        Some(_) => Err(ApiError::unsupported("tool_choice", "tool_choice may only be \"none\" or \"auto\" here")),
    }
}

/// The schema of a `json_schema` format (`schema`), or one for any object.
fn format_schema(format: &Value, param: &str, nested: bool) -> Result<Option<Value>, ApiError> {
    let kind = format.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({ "type": "object" }))),
        "json_schema" => {
            let holder = if nested { format.get("json_schema") } else { Some(format) };
            match holder.and_then(|h| h.get("schema")) {
                Some(s @ Value::Object(_)) => Ok(Some(s.clone())),
                _ => Err(ApiError::invalid(
                    if nested { format!("{param}.json_schema.schema") } else { format!("{param}.schema") },
                    "a json_schema format needs a schema object",
                )),
            }
        }
        _ => Err(ApiError::invalid(
            format!("{param}.type"),
            format!("format type {kind:?} is not accepted (accepted: text, json_object, json_schema)"),
        )),
    }
}

/// The text of a message's `content`: a string, or an array of text parts (flattened).
fn content_text(content: Option<&Value>, param: &str, text_types: &[&str]) -> Result<String, ApiError> {
    match content {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for (j, part) in parts.iter().enumerate() {
                let p = format!("{param}[{j}]");
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                if text_types.contains(&kind) {
                    let t = part
                        .get("text")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ApiError::invalid(format!("{p}.text"), "a text part needs a text string"))?;
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(t);
                } else {
                    return Err(ApiError::unsupported(
                        p,
                        format!(
                            "content part type {kind:?} is not supported (accepted: {}): images, audio and files do not reach the agent",
                            text_types.join(", ")
                        ),
                    ));
                }
            }
            Ok(out)
        }
        Some(_) => Err(ApiError::invalid(param, "content must be a string or an array of content parts")),
    }
}

/// Renders earlier turns and the last user message as the turn's input.
fn transcript(turns: &[(String, String)]) -> String {
    match turns {
        [] => String::new(),
        [(role, text)] if role == "user" => text.clone(),
        _ => {
            let mut out = String::from("The conversation so far, oldest first; answer the last user message.\n\n");
            for (role, text) in turns {
                out.push_str(&format!("[{role}]\n{text}\n\n"));
            }
            out.truncate(out.trim_end().len());
            out
        }
    }
}

/// `POST /v1/chat/completions`.
pub fn chat(body: &Value, models: &[ModelEntry]) -> Result<TurnRequest, ApiError> {
    let body = object(body)?;
    let model = model(body, models)?.clone();
    match field(body, "n") {
        None => {}
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(_) => return Err(ApiError::invalid("n", "n must be 1: one agent turn gives one answer")),
    }
    no_tools(body)?;
    if field(body, "functions").is_some() {
        return Err(ApiError::unsupported("functions", "client functions are not supported"));
    }
    let messages = match field(body, "messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) | None => {
            return Err(ApiError::invalid("messages", "messages must hold at least one message"))
        }
        Some(_) => return Err(ApiError::invalid("messages", "messages must be an array")),
    };
    let mut instructions: Vec<String> = Vec::new();
    let mut turns: Vec<(String, String)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let p = format!("messages[{i}]");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid(format!("{p}.role"), "each message needs a role"))?;
        let text = content_text(m.get("content").filter(|c| !c.is_null()), &format!("{p}.content"), &["text"])?;
        match role {
            "system" | "developer" => instructions.push(text),
            "user" | "assistant" => {
                if m.get("tool_calls").is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty())) {
                    return Err(ApiError::unsupported(format!("{p}.tool_calls"), "tool calls are not supported"));
                }
                turns.push((role.to_owned(), text));
            }
            "tool" | "function" => {
                return Err(ApiError::unsupported(
                    format!("{p}.role"),
                    format!("{role} messages are not supported (no client tools)"),
                ))
            }
            other => {
                return Err(ApiError::invalid(
                    format!("{p}.role"),
                    format!("role {other:?} is not accepted (accepted: system, developer, user, assistant)"),
                ))
            }
        }
    }
    if !turns.iter().any(|(r, _)| r == "user") {
        return Err(ApiError::invalid("messages", "messages hold no user message"));
    }
    let output_schema = match field(body, "response_format") {
        None => None,
        Some(f @ Value::Object(_)) => format_schema(f, "response_format", true)?,
        Some(_) => return Err(ApiError::invalid("response_format", "response_format must be an object")),
    };
    let stream = boolean(body, "stream", false)?;
    let include_usage = match field(body, "stream_options") {
        None => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::invalid("stream_options.include_usage", "include_usage must be a boolean"))
            }
        },
        Some(_) => return Err(ApiError::invalid("stream_options", "stream_options must be an object")),
    };
    Ok(TurnRequest {
        effort: effort(field(body, "reasoning_effort"), "reasoning_effort", &model)?,
        model,
        developer_instructions: (!instructions.is_empty()).then(|| instructions.join("\n\n")),
        input: transcript(&turns),
        output_schema,
        stream,
        include_usage,
        previous_response_id: None,
        store: false,
        echo: Map::new(),
    })
}

/// `POST /v1/responses`.
pub fn responses(body: &Value, models: &[ModelEntry]) -> Result<TurnRequest, ApiError> {
    let body = object(body)?;
    let model = model(body, models)?.clone();
    no_tools(body)?;
    let mut instructions: Vec<String> = Vec::new();
    match field(body, "instructions") {
        None => {}
        Some(Value::String(s)) => instructions.push(s.clone()),
        Some(_) => return Err(ApiError::invalid("instructions", "instructions must be a string")),
    }
    let mut turns: Vec<(String, String)> = Vec::new();
    match field(body, "input") {
        None => return Err(ApiError::invalid("input", "input is required: a string or an array of messages")),
        Some(Value::String(s)) => turns.push(("user".into(), s.clone())),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let p = format!("input[{i}]");
                let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
                if kind != "message" {
                    return Err(ApiError::unsupported(
                        format!("{p}.type"),
                        format!("input item type {kind:?} is not supported (accepted: message)"),
                    ));
                }
                let role = item
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::invalid(format!("{p}.role"), "each message needs a role"))?;
                let text =
                    content_text(item.get("content"), &format!("{p}.content"), &["input_text", "output_text", "text"])?;
                match role {
                    "system" | "developer" => instructions.push(text),
                    "user" | "assistant" => turns.push((role.to_owned(), text)),
                    other => {
                        return Err(ApiError::invalid(
                            format!("{p}.role"),
                            format!("role {other:?} is not accepted (accepted: system, developer, user, assistant)"),
                        ))
                    }
                }
            }
        }
        Some(_) => return Err(ApiError::invalid("input", "input must be a string or an array of messages")),
    }
    if turns.is_empty() {
        return Err(ApiError::invalid("input", "input holds no user or assistant message"));
    }
    let output_schema = match field(body, "text").and_then(|t| t.get("format")).filter(|f| !f.is_null()) {
        None => None,
        Some(f @ Value::Object(_)) => format_schema(f, "text.format", false)?,
        Some(_) => return Err(ApiError::invalid("text.format", "text.format must be an object")),
    };
    let previous_response_id = match field(body, "previous_response_id") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::invalid("previous_response_id", "previous_response_id must be a response id string"))
        }
    };
    let mut echo = Map::new();
    for k in ["instructions", "temperature", "top_p", "max_output_tokens", "metadata", "user", "parallel_tool_calls"] {
        if let Some(v) = field(body, k) {
            echo.insert(k.to_owned(), v.clone());
        }
    }
    if let Some(f) = field(body, "text") {
        echo.insert("text".into(), f.clone());
    }
    Ok(TurnRequest {
        effort: effort(
            field(body, "reasoning").and_then(|r| r.get("effort")).filter(|e| !e.is_null()),
            "reasoning.effort",
            &model,
        )?,
        model,
        developer_instructions: (!instructions.is_empty()).then(|| instructions.join("\n\n")),
        input: transcript(&turns),
        output_schema,
        stream: boolean(body, "stream", false)?,
        include_usage: false,
        previous_response_id,
        store: boolean(body, "store", true)?,
        echo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Vec<ModelEntry> {
        vec![ModelEntry { id: "codex".into(), codex_model: None, effort: Some("low".into()) }]
    }

    #[test]
    fn chat_maps_system_messages_history_format_and_effort() {
        let body = json!({
            "model": "codex",
            "messages": [
                {"role": "system", "content": "Use the edit format."},
                {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}], "name": "ann"},
                {"role": "assistant", "content": "hello"},
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "and now?"}
            ],
            "temperature": 0.2, "top_p": 1, "max_tokens": 10, "stop": ["x"], "presence_penalty": 0, "user": "u",
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {}}}},
            "reasoning_effort": "high",
            "stream": true, "stream_options": {"include_usage": true}
        });
        let r = chat(&body, &models()).expect("maps");
        assert_eq!(r.developer_instructions.as_deref(), Some("Use the edit format.\n\nBe brief."));
        assert!(
            r.input.contains("[user]\nhi")
                && r.input.contains("[assistant]\nhello")
                && r.input.ends_with("[user]\nand now?"),
            "{}",
            r.input
        );
        assert_eq!(r.output_schema, Some(json!({"type": "object", "properties": {}})));
        assert_eq!(r.effort.as_deref(), Some("high"));
        assert!(r.stream && r.include_usage);
        let single = chat(&json!({"model": "codex", "messages": [{"role": "user", "content": "only"}]}), &models())
            .expect("maps");
        assert_eq!(single.input, "only");
        assert_eq!(single.effort.as_deref(), Some("low"), "the model's default effort");
        let obj = chat(&json!({"model": "codex", "messages": [{"role": "user", "content": "j"}], "response_format": {"type": "json_object"}}), &models()).expect("maps");
        assert_eq!(obj.output_schema, Some(json!({"type": "object"})));
    }

    #[test]
    fn chat_refusals_name_the_field() {
        let ms = models();
        let cases = [
            (json!({"messages": [{"role": "user", "content": "x"}]}), "model_required", Some("model")),
            (
                json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
                "model_not_found",
                Some("model"),
            ),
            (
                json!({"model": "codex", "messages": [{"role": "user", "content": "x"}], "n": 2}),
                "invalid_request_error",
                Some("n"),
            ),
            (
                json!({"model": "codex", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}),
                "unsupported_parameter",
                Some("tools"),
            ),
            (
                json!({"model": "codex", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]}]}),
                "unsupported_parameter",
                Some("messages[0].content[1]"),
            ),
            (json!({"model": "codex", "messages": []}), "invalid_request_error", Some("messages")),
            (
                json!({"model": "codex", "messages": [{"role": "wizard", "content": "x"}]}),
                "invalid_request_error",
                Some("messages[0].role"),
            ),
            (
                json!({"model": "codex", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "max"}),
                "invalid_request_error",
                Some("reasoning_effort"),
            ),
            (json!([1]), "invalid_request_error", Some("")),
        ];
        for (body, code, param) in cases {
            let e = chat(&body, &ms).expect_err("refused");
            assert_eq!((e.code, e.param.as_deref()), (code, param), "{body}: {e:?}");
            assert!(e.status.is_client_error());
        }
    }

    #[test]
    fn responses_map_input_instructions_and_continuation() {
        let body = json!({
            "model": "codex", "instructions": "Answer in French.",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "bonjour"}]}],
            "previous_response_id": "resp_1", "store": true, "reasoning": {"effort": "minimal"},
            "text": {"format": {"type": "json_schema", "name": "o", "schema": {"type": "object"}, "strict": true}}
        });
        let r = responses(&body, &models()).expect("maps");
        assert_eq!(r.developer_instructions.as_deref(), Some("Answer in French."));
        assert_eq!(r.input, "bonjour");
        assert_eq!(r.previous_response_id.as_deref(), Some("resp_1"));
        assert_eq!(r.effort.as_deref(), Some("minimal"));
        assert_eq!(r.output_schema, Some(json!({"type": "object"})));
        let e = responses(
            &json!({"model": "codex", "input": [{"type": "function_call_output", "output": "x"}]}),
            &models(),
        )
        .expect_err("refused");
        assert_eq!(e.param.as_deref(), Some("input[0].type"));
        let e = responses(&json!({"model": "codex", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}), &models()).expect_err("image");
        assert_eq!(e.param.as_deref(), Some("input[0].content[0]"));
        assert!(!responses(&json!({"model": "codex", "input": "x", "store": false}), &models()).expect("maps").store);
    }
}
