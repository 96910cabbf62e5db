//! The CPU kernels' helper threads, kept spinning between calls. A batch-1 decode step is ~50
//! short kernel calls (four linear layers per block, the head), each a short burst of
//! streaming weights. rayon's workers go to sleep between them, and while one wakes only the
//! calling thread reads memory: the block layers streamed weights more slowly than the head,
//! one long call. Like llama.cpp's thread pool, these helpers
//! spin for a short while after each call, so the next one starts on every core at once, and
//! park when the engine goes quiet.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper spins for the next call before it parks: longer than the gap between two
/// kernels of a step (LayerNorms, bias adds, attention), short enough that a quiet engine
/// gives its cores back almost at once.
const SPIN: Duration = Duration::from_micros(500);

/// A call's work, borrowed for the call only (see [`run`]).
type Job = &'static (dyn Fn() + Sync);

struct Team {
    /// Held through one call: one caller at a time has the helpers; another runs alone.
    turn: Mutex<()>,
    /// Counts calls; a helper works when it sees a new value.
    call: AtomicU64,
    job: Mutex<Option<Job>>,
    /// Helpers still working on the current call.
    busy: AtomicUsize,
    /// A helper's work panicked during the current call.
    failed: AtomicBool,
    /// Helpers parked on `wake`.
    parked: Mutex<usize>,
    wake: Condvar,
    helpers: usize,
}

static TEAM: OnceLock<&'static Team> = OnceLock::new();

/// Runs `work` on the calling thread and on every helper at once, and returns when all are
/// done; `work` shares itself out (say, from an atomic counter). The helpers are rayon's
/// thread count minus one (`RAYON_NUM_THREADS` sets both), started on the first call.
fn run(work: &(dyn Fn() + Sync)) {
    let team = TEAM.get_or_init(start);
    let Ok(turn) = team.turn.try_lock() else { return work() };
    if team.helpers == 0 {
        return work();
    }
    // SAFETY: the helpers drop this reference before they count themselves out of `busy`,
    // and this function returns only once `busy` is 0 (or unwinds only after that), so no
    // helper uses `work` past its lifetime.
    let job: Job = unsafe { std::mem::transmute::<&(dyn Fn() + Sync), Job>(work) };
    *team.job.lock().expect("the job slot is never poisoned") = Some(job);
    team.busy.store(team.helpers, Ordering::Release);
    team.call.fetch_add(1, Ordering::Release);
    if *team.parked.lock().expect("the parking lot is never poisoned") > 0 {
        team.wake.notify_all();
    }
    let mine = catch_unwind(AssertUnwindSafe(work));
    while team.busy.load(Ordering::Acquire) != 0 {
        std::hint::spin_loop();
    }
    *team.job.lock().expect("the job slot is never poisoned") = None;
    let helper_failed = team.failed.swap(false, Ordering::Relaxed);
    // Handed back before any panic goes on, so it is not poisoned for the next call.
    drop(turn);
    if let Err(panic) = mine {
        std::panic::resume_unwind(panic);
    }
    assert!(!helper_failed, "a CPU kernel panicked on a helper thread");
}

/// `f(i, chunk)` for each `len`-long chunk of `out` (the last may be shorter), the chunks
/// handed out from a counter: the calling thread starts at once, and a helper that comes late
/// takes what is left (halves fixed in advance, as rayon splits, kept the caller waiting for a
/// late half, which slowed batch-8 decode).
pub fn for_each_chunk(out: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if out.len() <= len {
        return f(0, out);
    }
    let chunks: Vec<Mutex<&mut [f32]>> = out.chunks_mut(len).map(Mutex::new).collect();
    let next = AtomicUsize::new(0);
    run(&|| loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(chunk) = chunks.get(i) else { break };
        // Uncontended: the counter hands each chunk to one thread.
        f(i, &mut chunk.lock().expect("a chunk's lock is never poisoned"));
    });
}

fn start() -> &'static Team {
    let wanted = rayon::current_num_threads().saturating_sub(1);
    let team: &'static Team = Box::leak(Box::new(Team::new(wanted)));
    let started = (0..wanted)
        .filter(|i| std::thread::Builder::new().name(format!("inferlab-cpu-{i}")).spawn(move || help(team)).is_ok())
        .count();
    if started < wanted {
        // Without all its helpers a call would wait for work nobody does: run alone.
        return Box::leak(Box::new(Team::new(0)));
    }
    team
}

impl Team {
    fn new(helpers: usize) -> Self {
        Team {
            turn: Mutex::new(()),
            call: AtomicU64::new(0),
            job: Mutex::new(None),
            busy: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            parked: Mutex::new(0),
            wake: Condvar::new(),
            helpers,
        }
    }
}

/// A helper's life: wait for a call (spinning, then parked), do its work, count out.
fn help(team: &Team) {
    let mut seen = 0;
    loop {
        let since = Instant::now();
        let mut spins = 0u32;
        while team.call.load(Ordering::Acquire) == seen {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && since.elapsed() > SPIN {
                let mut parked = team.parked.lock().expect("the parking lot is never poisoned");
                *parked += 1;
                while team.call.load(Ordering::Acquire) == seen {
                    parked = team.wake.wait(parked).expect("the parking lot is never poisoned");
                }
                *parked -= 1;
            }
        }
        seen = team.call.load(Ordering::Acquire);
        let job =
            team.job.lock().expect("the job slot is never poisoned").expect("a call sets its job before it counts");
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            team.failed.store(true, Ordering::Relaxed);
        }
        team.busy.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::for_each_chunk;

    /// Every chunk is visited once, with its index, also while other threads call at once
    /// (they run alone) and after the helpers have parked.
    #[test]
    fn chunks_each_once_from_many_callers() {
        let callers: Vec<_> = (0..4)
            .map(|caller| {
                std::thread::spawn(move || {
                    for round in 0..50 {
                        let len = 1 + (caller * 7 + round) % 13;
                        let mut out = vec![0f32; 1000 + round];
                        for_each_chunk(&mut out, len, |i, chunk| {
                            chunk.iter_mut().enumerate().for_each(|(j, o)| *o += (i * len + j) as f32 + 1.0)
                        });
                        assert!(
                            out.iter().enumerate().all(|(j, &o)| o == j as f32 + 1.0),
                            "caller {caller}, round {round}"
                        );
                        if round % 10 == 9 {
                            std::thread::sleep(super::SPIN * 3);
                        }
                    }
                })
            })
            .collect();
        callers.into_iter().for_each(|c| c.join().expect("no caller panics"));
    }

    /// A panic in the work reaches the caller, and the team still works afterwards.
    #[test]
    fn a_panic_reaches_the_caller() {
        let mut out = vec![0f32; 64];
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for_each_chunk(&mut out, 1, |i, _| assert!(i != 40, "chunk 40 fails"));
        }));
        assert!(caught.is_err());
        let turn = super::TEAM.get().expect("the team started").turn.try_lock();
        assert!(!matches!(turn, Err(std::sync::TryLockError::Poisoned(_))), "the turn is not poisoned");
        drop(turn);
        let mut out = vec![0f32; 64];
        for_each_chunk(&mut out, 1, |_, chunk| chunk[0] = 1.0);
        assert!(out.iter().all(|&o| o == 1.0));
    }
}
