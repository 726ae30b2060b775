//! Response bodies: a whole JSON value, or a channel of SSE frames that ends when the sender is
//! dropped (and whose sender sees the client go away: the body is dropped with the connection).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::sync::mpsc;

/// Every response body.
pub type Body = BoxBody<Bytes, Infallible>;

/// A whole body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A JSON body.
pub fn json(v: &Value) -> Body {
    full(v.to_string())
}

/// A body fed by a channel.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// A streamed body and its sender (bounded: a slow client slows the sender down).
pub fn channel(capacity: usize) -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (tx, ChannelBody { rx }.boxed())
}

/// `data: <json>\n\n`.
pub fn sse_data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// `event: <name>\ndata: <json>\n\n`.
pub fn sse_event(name: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

/// `data: [DONE]\n\n`.
pub fn sse_done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// A keepalive comment.
pub fn sse_keepalive() -> Bytes {
    Bytes::from_static(b": keepalive\n\n")
}
