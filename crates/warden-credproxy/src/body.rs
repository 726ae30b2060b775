//! A pass-through body that counts, caps, times out on silence and optionally keeps a bounded copy
//! (for dumps), and reports once when it is over.
//!
//! Frames are handed on as they arrive: nothing is buffered on the way (the copy for a dump is taken
//! beside the stream, never instead of it).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// Boxed error of the proxied bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a body ended.
pub(crate) struct Finish {
    /// Data bytes passed through.
    pub bytes: u64,
    /// Whether it reached its end (false: error, timeout, cap, or dropped early).
    pub complete: bool,
    /// The copy, if teeing, and whether it was cut at the tee cap.
    pub tee: Option<(Vec<u8>, bool)>,
}

type Done = Box<dyn FnOnce(Finish) + Send>;

/// The error a [`Tap`] ends with when its own limits trip.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TapError {
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    #[error("no data for {0:?}")]
    Idle(Duration),
}

/// See the module docs.
pub(crate) struct Tap<B> {
    inner: B,
    bytes: u64,
    cap: Option<(u64, Arc<AtomicBool>)>,
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    counter: Option<Arc<AtomicU64>>,
    tee: Option<(Vec<u8>, usize, bool)>,
    done: Option<Done>,
}

impl<B> Tap<B> {
    pub(crate) fn new(inner: B) -> Tap<B> {
        Tap { inner, bytes: 0, cap: None, idle: None, counter: None, tee: None, done: None }
    }

    /// Fails the body (and sets `flag`) once more than `max` bytes went through.
    pub(crate) fn cap(mut self, max: u64, flag: Arc<AtomicBool>) -> Self {
        self.cap = Some((max, flag));
        self
    }

    /// Fails the body when no frame arrives for `d`.
    pub(crate) fn idle(mut self, d: Duration) -> Self {
        self.idle = Some((d, Box::pin(tokio::time::sleep(d))));
        self
    }

    /// Adds every data byte count to `c` as it passes.
    pub(crate) fn counter(mut self, c: Arc<AtomicU64>) -> Self {
        self.counter = Some(c);
        self
    }

    /// Keeps a copy of the first `max` bytes.
    pub(crate) fn tee(mut self, max: usize) -> Self {
        self.tee = Some((Vec::new(), max, false));
        self
    }

    /// Called exactly once: at the end of the body, on its first error, or when it is dropped.
    pub(crate) fn on_done(mut self, f: impl FnOnce(Finish) + Send + 'static) -> Self {
        self.done = Some(Box::new(f));
        self
    }

    fn finish(&mut self, complete: bool) {
        if let Some(done) = self.done.take() {
            let tee = self.tee.take().map(|(buf, _, cut)| (buf, cut));
            done(Finish { bytes: self.bytes, complete, tee });
        }
    }
}

impl<B> Drop for Tap<B> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl<B> Body for Tap<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.bytes += n;
                    if let Some(c) = &this.counter {
                        c.fetch_add(n, Ordering::Relaxed);
                    }
                    if let Some((max, flag)) = &this.cap {
                        if this.bytes > *max {
                            flag.store(true, Ordering::Relaxed);
                            let max = *max;
                            this.finish(false);
                            return Poll::Ready(Some(Err(Box::new(TapError::TooLarge(max)))));
                        }
                    }
                    if let Some((buf, max, cut)) = &mut this.tee {
                        let room = max.saturating_sub(buf.len());
                        if data.len() > room {
                            *cut = true;
                        }
                        buf.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                if let Some((d, sleep)) = &mut this.idle {
                    sleep.as_mut().reset(tokio::time::Instant::now() + *d);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some((d, sleep)) = &mut this.idle {
                    if sleep.as_mut().poll(cx).is_ready() {
                        let d = *d;
                        this.finish(false);
                        return Poll::Ready(Some(Err(Box::new(TapError::Idle(d)))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Mutex;

    #[tokio::test]
    async fn counts_caps_and_tees() {
        let body = http_body_util::Full::new(Bytes::from_static(b"hello world"));
        let got = Arc::new(Mutex::new(None));
        let g = got.clone();
        let counter = Arc::new(AtomicU64::new(0));
        let tap = Tap::new(body).counter(counter.clone()).tee(5).on_done(move |f| {
            *g.lock().expect("lock") = Some((f.bytes, f.complete, f.tee));
        });
        let out = tap.collect().await.expect("collect").to_bytes();
        assert_eq!(&out[..], b"hello world");
        assert_eq!(counter.load(Ordering::Relaxed), 11);
        let (bytes, complete, tee) = got.lock().expect("lock").take().expect("finished");
        assert_eq!((bytes, complete), (11, true));
        assert_eq!(tee, Some((b"hello".to_vec(), true)));

        let flag = Arc::new(AtomicBool::new(false));
        let body = http_body_util::Full::new(Bytes::from_static(b"hello world"));
        let err = Tap::new(body).cap(10, flag.clone()).collect().await.expect_err("over the cap");
        assert!(err.to_string().contains("larger than 10"));
        assert!(flag.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn reports_when_dropped_early() {
        let got = Arc::new(AtomicBool::new(false));
        let g = got.clone();
        let tap = Tap::new(http_body_util::Empty::<Bytes>::new()).on_done(move |f| {
            assert!(!f.complete);
            g.store(true, Ordering::Relaxed);
        });
        drop(tap);
        assert!(got.load(Ordering::Relaxed));
    }
}
