//! Connections to the upstream, driven by the task that serves the client.
//!
//! hyper's pooled client runs every upstream connection as a task of its own and hands each body
//! chunk to the response body across a one-slot channel: two task wake-ups per chunk, and the client
//! side writes one chunk per `writev` even when the upstream sent several in one segment. Here the
//! upstream connection (a plain `hyper::client::conn::http1` connection) is polled by the response
//! body itself, so every chunk already read is handed on at once and what arrived together leaves
//! together.
//!
//! What it guarantees: a connection is kept for reuse only when its response body ended cleanly and
//! hyper says it takes another request; an idle connection is reused only within `idle_for`, at most
//! `max_idle` are kept, and one the upstream closed is dropped at checkout (there is no timer: expired
//! or closed idle connections are closed at the next checkout or release); a request is retried (once,
//! on a fresh connection) only when hyper hands it back unsent, which a reused connection the upstream
//! had closed does. Dropping a body drops its connection (closing it). Requests are sent in origin
//! form; the caller sets `Host` and every other header.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Builder, Connection, SendRequest};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use crate::body::BoxError;
use crate::resolve::HickoryResolve;

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
pub(crate) type Connector = HttpsConnector<HttpConnector<HickoryResolve>>;

/// Why an exchange with the upstream failed (before the response head).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connect")]
    Connect(#[source] BoxError),
    #[error("http/1 handshake")]
    Handshake(#[source] hyper::Error),
    #[error("request")]
    Request(#[source] hyper::Error),
}

/// One connection: hyper's sender and the connection future that does its I/O.
struct Conn<B: Body + 'static> {
    send: SendRequest<B>,
    io: Pin<Box<Connection<Io, B>>>,
}

impl<B> Conn<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Drives the connection's I/O; false once it is over (closed or failed).
    fn poll_alive(&mut self, cx: &mut Context<'_>) -> bool {
        self.io.as_mut().poll(cx).is_pending()
    }
}

struct Idle<B: Body + 'static> {
    conn: Conn<B>,
    since: Instant,
}

/// The idle connections, oldest first.
pub(crate) struct Pool<B: Body + 'static> {
    idle: Mutex<Vec<Idle<B>>>,
    max_idle: usize,
    idle_for: Duration,
}

impl<B> Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn take(&self) -> Option<Conn<B>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(Idle { mut conn, since }) = idle.pop() {
            // A poll that finds the connection over (the upstream closed it) drops it.
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if since.elapsed() < self.idle_for && conn.poll_alive(&mut cx) && conn.send.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, conn: Conn<B>) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Oldest first (`take` pops the newest), so the expired ones are a prefix.
        let expired = idle.iter().take_while(|i| now.duration_since(i.since) >= self.idle_for).count();
        idle.drain(..expired);
        if idle.len() < self.max_idle {
            idle.push(Idle { conn, since: now });
        }
    }
}

/// See the module docs.
pub(crate) struct Upstream<B: Body + 'static> {
    connector: Connector,
    /// Scheme and authority to connect to.
    uri: http::Uri,
    builder: Builder,
    pool: Arc<Pool<B>>,
}

impl<B> Upstream<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(connector: Connector, uri: http::Uri, max_idle: usize, idle_for: Duration) -> Upstream<B> {
        let pool = Arc::new(Pool { idle: Mutex::new(Vec::new()), max_idle, idle_for });
        Upstream { connector, uri, builder: Builder::new(), pool }
    }

    async fn connect(&self) -> Result<Conn<B>, UpstreamError> {
        let mut c = self.connector.clone();
        std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut c, cx))
            .await
            .map_err(UpstreamError::Connect)?;
        let io = tower_service::Service::call(&mut c, self.uri.clone()).await.map_err(UpstreamError::Connect)?;
        let (send, io) = self.builder.handshake(io).await.map_err(UpstreamError::Handshake)?;
        Ok(Conn { send, io: Box::pin(io) })
    }

    /// Sends `req` (its URI in origin form) on an idle connection or a new one; returns the response
    /// with its body bound to the connection, which goes back to the pool when that body ends.
    pub(crate) async fn request(&self, mut req: Request<B>) -> Result<Response<Driven<B>>, UpstreamError> {
        let mut reused = true;
        loop {
            let mut conn = match self.pool.take().filter(|_| reused) {
                Some(c) => c,
                None => {
                    reused = false;
                    self.connect().await?
                }
            };
            let mut sent = std::pin::pin!(conn.send.try_send_request(req));
            let mut alive = true;
            let r = std::future::poll_fn(|cx| {
                if alive {
                    alive = conn.poll_alive(cx);
                }
                sent.as_mut().poll(cx)
            })
            .await;
            match r {
                Ok(resp) => {
                    let conn = alive.then_some(conn);
                    return Ok(resp.map(|body| Driven { body, conn, pool: self.pool.clone() }));
                }
                Err(mut e) => match e.take_message() {
                    // Unsent on a reused connection: the upstream had closed it. Once more on a new one.
                    Some(m) if reused => {
                        req = m;
                        reused = false;
                    }
                    _ => return Err(UpstreamError::Request(e.into_error())),
                },
            }
        }
    }
}

/// A response body that drives its connection's I/O as it is polled.
pub(crate) struct Driven<B: Body + 'static> {
    body: Incoming,
    conn: Option<Conn<B>>,
    pool: Arc<Pool<B>>,
}

impl<B> Driven<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// The body is complete: the connection takes in the end of the message and is kept if it asks
    /// for another request.
    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(mut c) = self.conn.take() {
            if c.poll_alive(cx) && c.send.is_ready() {
                self.pool.put(c);
            }
        }
    }
}

impl<B> Body for Driven<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(c) = &mut this.conn {
            if !c.poll_alive(cx) {
                // Over: the body sees the end or the error itself.
                this.conn = None;
            }
        }
        let r = Pin::new(&mut this.body).poll_frame(cx);
        // The end: `None`, or the last frame of a body of known length (hyper then stops polling).
        let end = match &r {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.body.is_end_stream(),
            _ => false,
        };
        if end {
            this.release(cx);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
