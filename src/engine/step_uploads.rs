//! Small device buffers that every layer's kernel launches of one step share, uploaded once
//! per step instead of once per launch (an upload has a fixed cost however small it is, more than
//! a small kernel on lavapipe, and a step has two launches per layer): the key and query positions, and each distinct parameter block.
//! Its own module because both the masks (`kv::mask`) and the kernels use it.

use std::sync::{Mutex, MutexGuard, PoisonError};

use cubecl::client::Client;
use cubecl::server::Handle;

/// The buffers of one step (lazily uploaded on first use). Behind mutexes, not cells, so a
/// step's plan can be shared with a profiling window's closure (which must be `Send`).
#[derive(Default)]
pub struct StepUploads {
    named: Mutex<Vec<(&'static str, Handle)>>,
    params: Mutex<Vec<(Vec<u32>, Handle)>>,
}

impl StepUploads {
    /// The step's buffer called `name`, uploaded from `bytes()` the first time it is asked for.
    pub fn buffer(&self, client: &Client, name: &'static str, bytes: impl FnOnce() -> Vec<u8>) -> Handle {
        if let Some((_, handle)) = lock(&self.named).iter().find(|(n, _)| *n == name) {
            return handle.clone();
        }
        let handle = client.create_from_slice(&bytes());
        lock(&self.named).push((name, handle.clone()));
        handle
    }

    /// A parameter block, shared by every launch of the step that passes the same values.
    pub fn params(&self, client: &Client, values: &[u32]) -> Handle {
        if let Some((_, handle)) = lock(&self.params).iter().find(|(v, _)| v == values) {
            return handle.clone();
        }
        let handle = client.create_from_slice(&words(values));
        lock(&self.params).push((values.to_vec(), handle.clone()));
        handle
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Little-endian bytes of 32-bit values, as WGSL storage buffers read them.
pub fn words<T: Copy + Into<Word>>(values: &[T]) -> Vec<u8> {
    values.iter().flat_map(|&v| v.into().0.to_le_bytes()).collect()
}

/// A 32-bit value of a storage buffer: a `u32`, or an `i32` by its bits.
pub struct Word(u32);

impl From<u32> for Word {
    fn from(v: u32) -> Self {
        Self(v)
    }
}

impl From<i32> for Word {
    fn from(v: i32) -> Self {
        Self(v as u32)
    }
}
