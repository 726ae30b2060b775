//! A pool of supervised workers: N workers serving M turns each, least-loaded dispatch, a bounded
//! queue with a wait timeout, one warm spare.
//!
//! Guarantees:
//! - at most `workers × per_worker` turns run at once, and at most `per_worker` on one worker;
//!   a turn goes to the ready worker with the fewest turns in flight;
//! - the pool runs `workers + 1` processes: the spare is warm, so a worker's crash or restart
//!   leaves the capacity unchanged and no start is on the request path;
//! - a request that finds no free slot waits in a queue of at most `queue` requests for at most
//!   `queue_timeout`; past either bound it fails with [`AgentError::Busy`] (retryable);
//! - a worker's crash fails only the turns it was serving ([`AgentError::WorkerExited`]); its
//!   supervisor restarts it;
//! - a turn's slot is released when its [`PoolTurn`] is dropped, however it ends;
//! - a worker that breaks the protocol, or stops making progress (its turns go silent past their
//!   idle timeout and an interrupt is not answered, or [`STUCK_TURNS`] in a row), is recycled:
//!   ended and replaced by its supervisor.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use crate::rpc::ServerRequestHandler;
use crate::supervisor::{Launcher, LiveWorker, Supervisor, SupervisorSettings};
use crate::turn::{self, ThreadId, ThreadParams, TurnEvent, TurnParams, TurnStream};
use crate::AgentError;

/// How many workers one turn's `thread/start` may try before a crash fails the turn.
pub const THREAD_START_ATTEMPTS: u32 = 3;

/// The shape of a [`Pool`].
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Workers serving at once (the pool runs one more, the warm spare).
    pub workers: usize,
    /// Turns one worker serves at once.
    pub per_worker: usize,
    /// Requests that may wait for a slot.
    pub queue: usize,
    /// How long one may wait.
    pub queue_timeout: Duration,
    /// Each worker's supervision.
    pub supervisor: SupervisorSettings,
}

impl Default for PoolSettings {
    fn default() -> PoolSettings {
        PoolSettings {
            workers: 2,
            per_worker: 4,
            queue: 64,
            queue_timeout: Duration::from_secs(30),
            supervisor: SupervisorSettings::default(),
        }
    }
}

struct Inner {
    settings: PoolSettings,
    supervisors: Vec<Supervisor>,
    /// One permit per turn the pool may serve at once.
    capacity: Arc<Semaphore>,
    /// One permit per request that may wait.
    queue: Arc<Semaphore>,
    /// Woken when a slot frees or a worker becomes ready.
    changed: Arc<Notify>,
}

/// N supervised workers (see the module docs).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("workers", &self.inner.supervisors.len()).finish_non_exhaustive()
    }
}

/// A turn running on a pool worker. Dropping it releases its slot (and unsubscribes nothing:
/// the turn's events stop being read; interrupt it first to stop the worker's work).
pub struct PoolTurn {
    /// The turn's events.
    pub stream: TurnStream,
    /// The worker serving it.
    pub worker: Arc<LiveWorker>,
    started: Instant,
    failed: bool,
    _slot: tokio::sync::OwnedSemaphorePermit,
    changed: Arc<Notify>,
}

impl std::fmt::Debug for PoolTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolTurn").field("worker", &self.worker.name).finish_non_exhaustive()
    }
}

impl PoolTurn {
    /// The next event. Counts a failure when the stream ends in an error or a failed turn, and
    /// judges the worker: a protocol violation recycles it at once; a turn that went silent past
    /// its idle timeout is interrupted, and the worker is recycled when the interrupt is not
    /// answered or when [`STUCK_TURNS`] turns in a row went silent.
    pub async fn next(&mut self) -> Option<Result<TurnEvent, AgentError>> {
        let e = self.stream.next().await;
        match &e {
            Some(Err(err)) => {
                self.failed = true;
                judge(&self.worker, err, Some((self.stream.thread_id().clone(), self.stream.turn_id().clone())));
            }
            Some(Ok(TurnEvent::Completed { status, .. })) => {
                self.worker.stuck_turns.store(0, Ordering::SeqCst);
                if !matches!(status, turn::TurnStatus::Completed) {
                    self.failed = true
                }
            }
            _ => {}
        }
        e
    }
}

/// Turns in a row that went silent past their idle timeout before their worker is recycled.
pub const STUCK_TURNS: u32 = 2;

/// What an error says about the worker that gave it (see [`PoolTurn::next`]).
fn judge(worker: &Arc<LiveWorker>, err: &AgentError, turn: Option<(ThreadId, turn::TurnId)>) {
    match err {
        AgentError::Protocol(_) => worker.recycle(),
        AgentError::Timeout { .. } => {
            let stuck = worker.stuck_turns.fetch_add(1, Ordering::SeqCst) + 1;
            if stuck >= STUCK_TURNS {
                worker.recycle();
                return;
            }
            let Some((thread, id)) = turn else {
                worker.recycle();
                return;
            };
            let worker = worker.clone();
            tokio::spawn(async move {
                if turn::interrupt(&worker.conn, &thread, &id).await.is_err() {
                    worker.recycle();
                }
            });
        }
        _ => {}
    }
}

impl Drop for PoolTurn {
    fn drop(&mut self) {
        let m = &self.worker.metrics;
        m.latency_us_total
            .fetch_add(u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        if self.failed {
            m.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.worker.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

impl Pool {
    /// Starts `settings.workers + 1` supervised workers, each from `launcher(i)`.
    pub fn start(
        settings: PoolSettings,
        launcher: impl Fn(usize) -> Arc<dyn Launcher>,
        handler: Arc<dyn ServerRequestHandler>,
    ) -> Pool {
        let changed = Arc::new(Notify::new());
        let supervisors: Vec<Supervisor> = (0..settings.workers.max(1) + 1)
            .map(|i| {
                let sup =
                    Supervisor::start(format!("worker-{i}"), launcher(i), handler.clone(), settings.supervisor.clone());
                // Wake waiting requests whenever this worker becomes ready (or goes).
                let mut rx = sup.watch();
                let changed = changed.clone();
                tokio::spawn(async move {
                    while rx.changed().await.is_ok() {
                        changed.notify_waiters();
                    }
                });
                sup
            })
            .collect();
        let capacity = Arc::new(Semaphore::new(settings.workers.max(1) * settings.per_worker.max(1)));
        let queue = Arc::new(Semaphore::new(settings.queue));
        Pool { inner: Arc::new(Inner { settings, supervisors, capacity, queue, changed }) }
    }

    /// The supervisors (the spare included).
    pub fn supervisors(&self) -> &[Supervisor] {
        &self.inner.supervisors
    }

    /// Whether every supervisor is live (none hit its restart limit).
    pub fn is_live(&self) -> bool {
        self.inner.supervisors.iter().all(Supervisor::is_live)
    }

    /// Whether some worker is ready to serve.
    pub fn is_ready(&self) -> bool {
        self.inner.supervisors.iter().any(|s| s.current().is_some())
    }

    /// A slot of the pool's capacity, waiting (in the bounded queue) until `deadline`.
    async fn slot(&self, deadline: tokio::time::Instant) -> Result<tokio::sync::OwnedSemaphorePermit, AgentError> {
        let inner = &self.inner;
        let busy = || AgentError::Busy { waited: inner.settings.queue_timeout };
        match inner.capacity.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(_) => {
                let Ok(_waiting) = inner.queue.clone().try_acquire_owned() else { return Err(busy()) };
                tokio::time::timeout_at(deadline, inner.capacity.clone().acquire_owned())
                    .await
                    .map_err(|_| busy())?
                    .map_err(|_| busy())
            }
        }
    }

    /// The least-loaded ready worker with a free place (reserved), waiting until `deadline`.
    async fn worker(
        &self,
        deadline: tokio::time::Instant,
        tried: &[Arc<LiveWorker>],
    ) -> Result<Arc<LiveWorker>, AgentError> {
        loop {
            let notified = self.inner.changed.notified();
            if let Some(w) = self.least_loaded(tried) {
                return Ok(w);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(if self.is_ready() {
                    AgentError::Busy { waited: self.inner.settings.queue_timeout }
                } else {
                    AgentError::NotReady
                });
            }
        }
    }

    /// The ready worker with the fewest turns in flight and a free place; reserves the place. A
    /// worker whose connection is no longer open (it crashed; its supervisor has not seen it
    /// yet) is skipped.
    fn least_loaded(&self, tried: &[Arc<LiveWorker>]) -> Option<Arc<LiveWorker>> {
        let per = self.inner.settings.per_worker.max(1);
        let mut ready: Vec<Arc<LiveWorker>> = self
            .inner
            .supervisors
            .iter()
            .filter_map(Supervisor::current)
            .filter(|w| w.conn.is_open() && !tried.iter().any(|t| Arc::ptr_eq(t, w)))
            .collect();
        ready.sort_by_key(|w| w.in_flight.load(Ordering::SeqCst));
        ready.into_iter().find(|w| {
            w.in_flight.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < per).then_some(n + 1)).is_ok()
        })
    }

    /// Starts a thread and a turn on it, on the least-loaded worker.
    ///
    /// A worker that turns out dead (it crashed after it was chosen) or overloaded at
    /// `thread/start` has seen nothing of the turn: the thread is started on another worker, up
    /// to [`THREAD_START_ATTEMPTS`] workers. Once `turn/start` was sent, a crash fails the turn.
    pub async fn turn(&self, thread: &ThreadParams, params: TurnParams) -> Result<PoolTurn, AgentError> {
        let deadline = tokio::time::Instant::now() + self.inner.settings.queue_timeout;
        let slot = self.slot(deadline).await?;
        let release = |worker: &Arc<LiveWorker>, failed: bool| {
            if failed {
                worker.metrics.failures.fetch_add(1, Ordering::Relaxed);
            }
            worker.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.inner.changed.notify_waiters();
        };
        let mut tried: Vec<Arc<LiveWorker>> = Vec::new();
        let (worker, tid) = loop {
            let worker = self.worker(deadline, &tried).await?;
            match turn::start_thread(&worker.conn, thread).await {
                Ok(tid) => break (worker, tid),
                Err(AgentError::WorkerExited { .. } | AgentError::Overloaded { .. })
                    if tried.len() + 1 < THREAD_START_ATTEMPTS as usize =>
                {
                    release(&worker, false);
                    tried.push(worker);
                }
                Err(e) => {
                    judge(&worker, &e, None);
                    release(&worker, true);
                    return Err(e);
                }
            }
        };
        worker.metrics.turns.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match turn::start_turn(&worker.conn, &tid, params).await {
            Ok(stream) => Ok(PoolTurn {
                stream,
                worker,
                started,
                failed: false,
                _slot: slot,
                changed: self.inner.changed.clone(),
            }),
            Err(e) => {
                judge(&worker, &e, None);
                release(&worker, true);
                Err(e)
            }
        }
    }

    /// Starts a turn on a thread that `worker` already holds (a kept conversation), waiting for
    /// a slot and for a free place on that worker until the queue timeout.
    ///
    /// Fails with [`AgentError::WorkerExited`] when that worker process is gone (its threads went
    /// with it: the caller forgets the conversation), with [`AgentError::Busy`] when no place
    /// frees in time.
    pub async fn turn_on(
        &self,
        worker: &Arc<LiveWorker>,
        thread: &ThreadId,
        params: TurnParams,
    ) -> Result<PoolTurn, AgentError> {
        let deadline = tokio::time::Instant::now() + self.inner.settings.queue_timeout;
        let slot = self.slot(deadline).await?;
        let per = self.inner.settings.per_worker.max(1);
        // Bounded: each pass either reserves, fails, or waits for a change until the deadline.
        loop {
            let notified = self.inner.changed.notified();
            if !worker.conn.is_open() {
                return Err(AgentError::WorkerExited { pending: None });
            }
            if worker.in_flight.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < per).then_some(n + 1)).is_ok()
            {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(AgentError::Busy { waited: self.inner.settings.queue_timeout });
            }
        }
        worker.metrics.turns.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match turn::start_turn(&worker.conn, thread, params).await {
            Ok(stream) => Ok(PoolTurn {
                stream,
                worker: worker.clone(),
                started,
                failed: false,
                _slot: slot,
                changed: self.inner.changed.clone(),
            }),
            Err(e) => {
                judge(worker, &e, None);
                worker.metrics.failures.fetch_add(1, Ordering::Relaxed);
                worker.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.inner.changed.notify_waiters();
                Err(e)
            }
        }
    }

    /// The pool's shape.
    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    /// Shuts every worker down (drain, then end), and waits for them.
    pub async fn shutdown(&self) {
        let all = self.inner.supervisors.iter().map(|s| s.shutdown());
        for f in all {
            f.await;
        }
    }
}
