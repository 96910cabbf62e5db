//! Batching: many requests through one model, as vLLM and nano-vllm do it, in four parts —
//! sequences (token counts, block tables, timelines), schedulers (which tokens of which
//! sequences run each step), the model runner (one ragged forward over the paged cache) and
//! the serving loop that ties them to a clock. `stats` turns a run into the numbers every
//! policy is compared by; `workload` makes or reads the requests; `simulate` runs the same
//! schedulers against a step-cost model instead of the model.

pub mod driver;
pub mod runner;
pub mod scheduler;
pub mod sequence;
pub mod simulate;
pub mod stats;
pub mod workload;
