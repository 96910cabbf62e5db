//! The front door to the replicas: admission (a bounded queue, refused with 429 when full;
//! 503 while loading or draining) and placement (each job to the least-loaded replica, as
//! seen by its in-flight sequence count).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::http::StatusCode;

use super::api::ApiError;
use super::engine::{Gauges, Job};

pub struct Router {
    replicas: Vec<(tokio::sync::mpsc::UnboundedSender<Job>, Arc<Gauges>)>,
    /// Sequences admitted but not yet given a first step, across replicas.
    pub queued: Arc<AtomicUsize>,
    pub max_queue: usize,
    draining: AtomicBool,
}

impl Router {
    pub fn new(
        replicas: Vec<(tokio::sync::mpsc::UnboundedSender<Job>, Arc<Gauges>)>,
        queued: Arc<AtomicUsize>,
        max_queue: usize,
    ) -> Self {
        Self { replicas, queued, max_queue, draining: AtomicBool::new(false) }
    }

    pub fn ready(&self) -> bool {
        !self.draining() && self.replicas.iter().all(|(_, g)| g.ready.load(Ordering::SeqCst))
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Stops admitting: new requests get 503, running ones finish.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn gauges(&self) -> impl Iterator<Item = &Gauges> {
        self.replicas.iter().map(|(_, g)| g.as_ref())
    }

    /// Admits a job, or says why not.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        if self.draining() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "draining",
                "the server is shutting down; retry on another replica",
            ));
        }
        if !self.ready() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "loading",
                "the model is still loading; retry shortly",
            ));
        }
        let n = job.seqs.len();
        let admitted = self
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| (q + n <= self.max_queue).then_some(q + n));
        if let Err(q) = admitted {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "queue_full",
                format!("the queue is full ({q} of {} sequences waiting); retry after a second", self.max_queue),
            ));
        }
        let (inbox, gauges) =
            self.replicas.iter().min_by_key(|(_, g)| g.inflight.load(Ordering::SeqCst)).expect("at least one replica");
        gauges.inflight.fetch_add(n, Ordering::SeqCst);
        inbox.send(job).map_err(|_| {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            gauges.inflight.fetch_sub(n, Ordering::SeqCst);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "engine_stopped",
                "the engine has stopped",
            )
        })
    }
}
