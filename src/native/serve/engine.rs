//! One engine replica: a thread that owns a model, its paged KV cache and a scheduler, and runs
//! steps while any sequence is live. Jobs come in through a channel; each sequence's tokens go
//! back through its job's channel. The engine never waits on a client: sends never block, and a
//! client that went away (its receiver dropped), a stop string (its flag) or a passed deadline
//! aborts the sequence before the next step, which frees its blocks at once.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use metrics::{counter, histogram};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender, error::TryRecvError};

use crate::engine::batching::driver::Executor;
use crate::engine::batching::runner::{ModelRunner, Sampled};
use crate::engine::batching::scheduler::{Policy, ScheduledStep, Scheduler, SchedulerConfig};
use crate::engine::batching::sequence::{Finish, Request};
use crate::engine::decode::sampling::{SamplingParams, TokenLogprobs};
use crate::engine::decode::scoring::prompt_logprobs;
use crate::engine::model::gpt2::Gpt2;

/// One request's sequences (its prompts × n choices) and where their tokens go.
pub struct Job {
    pub seqs: Vec<JobSeq>,
    pub events: UnboundedSender<Event>,
    pub received: Instant,
    pub deadline: Instant,
}

pub struct JobSeq {
    pub choice: usize,
    pub request: Request,
    /// `echo` with `logprobs`: score the prompt first, with this many top tokens a position.
    pub prompt_logprobs: Option<usize>,
    /// Set by the HTTP side when a stop string matched.
    pub stop: Arc<AtomicBool>,
}

/// What the engine tells a job.
#[derive(Debug)]
pub enum Event {
    /// The prompt's own log-probabilities (the first token has none), before any token.
    PromptLogprobs {
        choice: usize,
        logprobs: Vec<Option<TokenLogprobs>>,
    },
    Token {
        choice: usize,
        token: u32,
        logprobs: Option<TokenLogprobs>,
    },
    Done {
        choice: usize,
        outcome: Outcome,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Ended by an end-of-sequence token or `max_tokens`.
    Finished(Finish),
    TimedOut,
    /// The step it was in failed; the engine goes on without it.
    Failed(String),
}

/// What a replica shows the router and `/metrics`.
#[derive(Default)]
pub struct Gauges {
    pub ready: AtomicBool,
    /// Sequences sent to this replica and not yet done: the router's load measure.
    pub inflight: AtomicUsize,
    /// In the scheduler's waiting queue: not started yet, or preempted and waiting to be recomputed.
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
    pub blocks_used: AtomicUsize,
    pub blocks_free: AtomicUsize,
}

/// A sequence the engine is serving.
struct Live {
    choice: usize,
    events: UnboundedSender<Event>,
    stop: Arc<AtomicBool>,
    received: Instant,
    deadline: Instant,
    started: bool,
}

/// A running replica's door (its jobs channel) and its gauges.
pub struct Replica {
    pub inbox: UnboundedSender<Job>,
    pub gauges: Arc<Gauges>,
}

/// Starts a replica: `load` builds the model on the engine's own thread; `queued` counts the
/// server's sequences not yet started, which the engine decrements as they start.
/// `loaded` hears once: the replica is warmed up and ready, or why it is not.
pub fn spawn(
    name: String,
    load: impl FnOnce() -> Result<Gpt2> + Send + 'static,
    config: SchedulerConfig,
    queued: Arc<AtomicUsize>,
    loaded: std::sync::mpsc::Sender<Result<()>>,
) -> Result<Replica> {
    let (inbox, jobs) = mpsc::unbounded_channel();
    let gauges = Arc::new(Gauges::default());
    let shared = gauges.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let model = match load() {
                Ok(model) => model,
                Err(e) => return drop(loaded.send(Err(e))),
            };
            let engine = ReplicaLoop::new(&model, config, shared, queued)
                .and_then(|mut engine| engine.warm_up().map(|()| engine));
            match engine {
                Err(e) => drop(loaded.send(Err(e.context("the warm-up request failed")))),
                Ok(mut engine) => {
                    engine.gauges.ready.store(true, Ordering::SeqCst);
                    let _ = loaded.send(Ok(()));
                    engine.serve(jobs);
                }
            }
        })
        .context("cannot start an engine thread")?;
    Ok(Replica { inbox, gauges })
}

/// Runs engine work to its end on this thread; an error or a panic inside burn comes back as
/// its message, so the work fails alone and the replica goes on.
fn guarded<T>(work: impl Future<Output = crate::engine::error::Result<T>>) -> Result<T, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| pollster::block_on(work))) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(crate::native::panic_message(panic.as_ref())),
    }
}

struct ReplicaLoop<'m> {
    model: &'m Gpt2,
    scheduler: Scheduler,
    runner: ModelRunner<'m>,
    live: HashMap<usize, Live>,
    gauges: Arc<Gauges>,
    queued: Arc<AtomicUsize>,
    epoch: Instant,
    preemptions: usize,
    /// Sequences that ended but are not forgotten yet (a static batch holds its finished members).
    ended: Vec<usize>,
}

impl<'m> ReplicaLoop<'m> {
    fn new(model: &'m Gpt2, config: SchedulerConfig, gauges: Arc<Gauges>, queued: Arc<AtomicUsize>) -> Result<Self> {
        let runner = ModelRunner::new(model, config.num_blocks, config.block_size)?;
        let mut scheduler = Scheduler::new(config)?;
        // A server never knows that no more requests will come: a static batch starts with
        // whoever waits when the previous batch ends.
        if scheduler.config.policy == Policy::Static {
            scheduler.close();
        }
        Ok(Self {
            model,
            scheduler,
            runner,
            live: HashMap::new(),
            gauges,
            queued,
            epoch: Instant::now(),
            preemptions: 0,
            ended: vec![],
        })
    }

    fn now_ms(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1000.0
    }

    /// Runs one short request through every code path (prefill, decode, sampling) so the first
    /// client does not pay for kernel compilation and autotuning.
    fn warm_up(&mut self) -> Result<()> {
        let request = Request {
            prompt: vec![0, 1, 2],
            max_new_tokens: 2,
            sampling: SamplingParams { temperature: 1.0, ..SamplingParams::default() },
            eos_token_ids: vec![],
            arrival_ms: self.now_ms(),
            logprobs: None,
        };
        let id = self.scheduler.add(request)?;
        while !self.scheduler.seqs[id].is_finished() {
            let now = self.now_ms();
            let step = self.scheduler.schedule(now).context("the warm-up request could not be scheduled")?;
            let sampled = pollster::block_on(self.runner.run(&step, &self.scheduler))?;
            let tokens: Vec<u32> = sampled.iter().map(|s| s.token).collect();
            let end = self.now_ms();
            self.scheduler.complete(&step, &tokens, now, end);
        }
        self.runner.release(id);
        self.scheduler.forget(id);
        self.publish();
        Ok(())
    }

    /// Serves until the inbox closes (the server shuts down) and nothing is live.
    fn serve(&mut self, mut jobs: UnboundedReceiver<Job>) {
        let mut open = true;
        loop {
            if self.live.is_empty() {
                if !open {
                    return;
                }
                // Idle: sleep until a job comes (or the server closes the inbox).
                match jobs.blocking_recv() {
                    Some(job) => self.admit(job),
                    None => return,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.reap();
            let now = self.now_ms();
            match self.scheduler.schedule(now) {
                Some(step) => self.run(step, now),
                // Nothing can run (blocks held by a batch that is draining): look again soon.
                None if !self.live.is_empty() => std::thread::sleep(Duration::from_millis(1)),
                None => {}
            }
            self.forget_done();
            self.publish();
        }
    }

    fn admit(&mut self, job: Job) {
        let arrival_ms = job.received.saturating_duration_since(self.epoch).as_secs_f64() * 1000.0;
        // The choices of one prompt come one after the other and share its scores.
        let mut scored: Option<(Vec<u32>, Vec<Option<TokenLogprobs>>)> = None;
        for seq in job.seqs {
            let events = job.events.clone();
            // Scoring the prompt is one teacher-forced pass, run here like a prefill.
            if let Some(top) = seq.prompt_logprobs {
                let prompt = &seq.request.prompt;
                let logprobs = match &scored {
                    Some((same, logprobs)) if same == prompt => logprobs.clone(),
                    _ => match guarded(prompt_logprobs(self.model, prompt, top)) {
                        Ok(logprobs) => scored.insert((prompt.clone(), logprobs)).1.clone(),
                        Err(message) => {
                            let outcome = Outcome::Failed(format!("the engine failed: {message}"));
                            self.not_scheduled(&events, seq.choice, outcome);
                            continue;
                        }
                    },
                };
                let _ = events.send(Event::PromptLogprobs { choice: seq.choice, logprobs });
            }
            // `max_tokens: 0` (with `echo`): the scored prompt is the whole answer.
            if seq.request.max_new_tokens == 0 {
                self.not_scheduled(&events, seq.choice, Outcome::Finished(Finish::MaxNewTokens));
                continue;
            }
            let request = Request { arrival_ms, ..seq.request };
            let live = Live {
                choice: seq.choice,
                events,
                stop: seq.stop,
                received: job.received,
                deadline: job.deadline,
                started: false,
            };
            match self.scheduler.add(request) {
                Ok(id) => {
                    self.live.insert(id, live);
                }
                // The HTTP side checked the request; a refusal here is a bug, told to the client.
                Err(e) => self.not_scheduled(&live.events, live.choice, Outcome::Failed(e.to_string())),
            }
        }
    }

    /// A sequence that ends without entering the scheduler: its counts are given back at once.
    fn not_scheduled(&self, events: &UnboundedSender<Event>, choice: usize, outcome: Outcome) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
        self.gauges.inflight.fetch_sub(1, Ordering::SeqCst);
        let _ = events.send(Event::Done { choice, outcome });
    }

    /// Aborts the sequences whose client left, whose stop string matched or whose deadline
    /// passed; only the last is told (the client or the HTTP side already knows the others).
    fn reap(&mut self) {
        let now = Instant::now();
        let gone: Vec<(usize, Option<Outcome>)> = self
            .live
            .iter()
            .filter_map(|(&id, l)| {
                if l.events.is_closed() {
                    counter!("inferlab_cancelled_sequences_total").increment(1);
                    Some((id, None))
                } else if l.stop.load(Ordering::Relaxed) {
                    Some((id, None))
                } else {
                    (now >= l.deadline).then_some((id, Some(Outcome::TimedOut)))
                }
            })
            .collect();
        for (id, outcome) in gone {
            let now_ms = self.now_ms();
            self.scheduler.abort(id, now_ms);
            self.end(id, outcome);
        }
    }

    fn run(&mut self, step: ScheduledStep, start_ms: f64) {
        let started = Instant::now();
        for item in &step.items {
            if let Some(live) = self.live.get_mut(&item.seq)
                && !live.started
            {
                live.started = true;
                self.queued.fetch_sub(1, Ordering::SeqCst);
                histogram!("inferlab_admission_latency_seconds")
                    .record(started.duration_since(live.received).as_secs_f64());
                let cached = self.scheduler.seqs[item.seq].cached_tokens;
                if cached > 0 {
                    counter!("inferlab_prefix_cache_hits_total").increment(1);
                    counter!("inferlab_prefix_cache_hit_tokens_total").increment(cached as u64);
                }
            }
        }
        // A failing step (an error, or a panic inside burn) fails its own sequences only.
        let sampled: Vec<Sampled> = match guarded(self.runner.run(&step, &self.scheduler)) {
            Ok(sampled) => sampled,
            Err(message) => return self.fail(&step, message),
        };
        histogram!("inferlab_step_seconds").record(started.elapsed().as_secs_f64());
        let tokens: Vec<u32> = sampled.iter().map(|s| s.token).collect();
        let finished = self.scheduler.complete(&step, &tokens, start_ms, self.now_ms());
        // The gauges first: a client that reads /metrics after its answer sees its blocks freed.
        self.publish();
        counter!("inferlab_generated_tokens_total").increment(tokens.len() as u64);
        let sampling = step.items.iter().filter(|i| i.sample);
        for (item, sampled) in sampling.zip(sampled) {
            if let Some(live) = self.live.get(&item.seq) {
                let _ = live.events.send(Event::Token {
                    choice: live.choice,
                    token: sampled.token,
                    logprobs: sampled.logprobs,
                });
            }
        }
        for id in finished {
            let finish = self.scheduler.seqs[id].finish.expect("finished");
            self.end(id, Some(Outcome::Finished(finish)));
        }
        if self.scheduler.preemptions > self.preemptions {
            counter!("inferlab_preemptions_total").increment((self.scheduler.preemptions - self.preemptions) as u64);
            self.preemptions = self.scheduler.preemptions;
        }
    }

    fn fail(&mut self, step: &ScheduledStep, message: String) {
        tracing::error!(%message, "a step failed; its sequences fail with it");
        for item in &step.items {
            let now_ms = self.now_ms();
            self.scheduler.abort(item.seq, now_ms);
            self.end(item.seq, Some(Outcome::Failed(format!("the engine failed: {message}"))));
        }
    }

    /// A sequence is over: tell its job (unless it was the client's own doing) and let go of it.
    fn end(&mut self, id: usize, outcome: Option<Outcome>) {
        let Some(live) = self.live.remove(&id) else { return };
        // Its sampler goes now: the id will be reused by a later request.
        self.runner.release(id);
        self.ended.push(id);
        if !live.started {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
        self.gauges.inflight.fetch_sub(1, Ordering::SeqCst);
        if let Some(outcome) = outcome {
            let _ = live.events.send(Event::Done { choice: live.choice, outcome });
        }
    }

    /// Forgets the ended sequences no batch holds any more.
    fn forget_done(&mut self) {
        self.ended.retain(|&id| !self.scheduler.forget(id));
    }

    fn publish(&self) {
        let g = &self.gauges;
        g.waiting.store(self.scheduler.waiting(), Ordering::Relaxed);
        g.running.store(self.scheduler.running().len(), Ordering::Relaxed);
        g.blocks_used.store(self.scheduler.blocks.used_blocks(), Ordering::Relaxed);
        g.blocks_free.store(self.scheduler.blocks.free_blocks(), Ordering::Relaxed);
    }
}
