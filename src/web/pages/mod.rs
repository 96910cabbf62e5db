//! One module per page of the app.

pub mod kv_cache;
pub mod playground;
