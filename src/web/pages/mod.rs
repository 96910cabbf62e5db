//! One module per page of the app.

pub mod batching;
pub mod beam;
pub mod home;
pub mod internals;
pub mod kv_cache;
pub mod playground;
pub mod speculative;
