//! Correctness under batching, on every fixture model, on the CPU device and on wgpu: for every
//! policy — and for a KV pool so small that sequences get preempted and recomputed — each
//! request's greedy output equals transformers' greedy output for its prompt, token for token;
//! seeded sampled requests give what they give alone; and after every run the pool is whole.

mod common;

use std::ops::ControlFlow;

use common::{Case, cases};
use inferlab::engine::batching::driver::{self, Run};
use inferlab::engine::batching::runner::ModelRunner;
use inferlab::engine::batching::scheduler::{Policy, Scheduler, SchedulerConfig};
use inferlab::engine::batching::sequence::Request;
use inferlab::engine::batching::stats;
use inferlab::engine::decode::generate::{GenerateOptions, generate};
use inferlab::engine::decode::sampling::SamplingParams;
use inferlab::engine::kv::KvMode;

/// The fixtures' prompts as requests for their greedy goldens, arriving 3 ms apart.
fn golden_requests(case: &Case) -> Vec<Request> {
    case.golden
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Request {
            prompt: p.input_ids.clone(),
            max_new_tokens: p.greedy.new_ids.len(),
            sampling: SamplingParams::default(),
            eos_token_ids: vec![],
            arrival_ms: 3.0 * i as f64,
            logprobs: None,
        })
        .collect()
}

fn run(case: &Case, config: SchedulerConfig, requests: Vec<Request>) -> Run {
    let model = &case.loaded.model;
    let mut runner = ModelRunner::new(model, config.num_blocks, config.block_size).unwrap();
    let scheduler = Scheduler::new(config).unwrap();
    pollster::block_on(driver::run(scheduler, requests, &mut runner, |_, _| ControlFlow::Continue(())))
        .unwrap_or_else(|e| panic!("{}: {e}", case.label))
}

fn config(case: &Case, policy: Policy, edit: impl FnOnce(&mut SchedulerConfig)) -> SchedulerConfig {
    let mut config = SchedulerConfig::new(policy, case.loaded.model.config.n_positions);
    config.max_batch = 4;
    config.max_wait_ms = 5.0;
    config.num_blocks = 64;
    edit(&mut config);
    config
}

/// Every request got its golden ids, and the pool has every block back.
fn assert_golden(case: &Case, label: &str, run: &Run) {
    for (report, prompt) in stats::requests(run).iter().zip(&case.golden.prompts) {
        assert_eq!(report.error, None, "{}: {label}: {} refused", case.label, prompt.name);
        assert_eq!(report.generated_ids, prompt.greedy.new_ids, "{}: {label}: {}", case.label, prompt.name);
    }
    let blocks = &run.scheduler.blocks;
    assert_eq!(blocks.free_blocks(), blocks.num_blocks(), "{}: {label}: blocks leaked", case.label);
}

#[test]
fn every_policy_gives_each_request_its_solo_greedy_output() {
    for case in cases() {
        let cases: Vec<(&str, SchedulerConfig)> = vec![
            ("static", config(&case, Policy::Static, |_| {})),
            ("dynamic", config(&case, Policy::Dynamic, |_| {})),
            ("adaptive", config(&case, Policy::Adaptive, |c| c.max_batch = 2)),
            ("continuous", config(&case, Policy::Continuous, |c| c.max_batch = 8)),
            (
                "continuous, block size 1, chunked prefill",
                config(&case, Policy::Continuous, |c| {
                    c.block_size = 1;
                    c.num_blocks = 1024;
                    c.chunk_tokens = Some(7);
                    c.token_budget = 16;
                }),
            ),
            (
                "continuous, block size 32",
                config(&case, Policy::Continuous, |c| {
                    c.block_size = 32;
                    c.num_blocks = 16;
                }),
            ),
        ];
        for (label, config) in cases {
            let run = run(&case, config, golden_requests(&case));
            assert_golden(&case, label, &run);
            assert!(run.steps.iter().any(|s| s.seqs > 1), "{}: {label}: never batched", case.label);
        }
    }
}

#[test]
fn a_pool_too_small_preempts_and_recomputes_without_changing_outputs() {
    for case in cases() {
        let requests = golden_requests(&case);
        let longest = requests.iter().map(|r| r.prompt.len() + r.max_new_tokens).max().unwrap();
        // Room for the longest request and a little more: the others must take turns.
        let config = config(&case, Policy::Continuous, |c| {
            c.max_batch = 6;
            c.block_size = 4;
            c.num_blocks = longest.div_ceil(4) + 3;
        });
        let run = run(&case, config, requests);
        assert_golden(&case, "tiny pool", &run);
        assert!(run.scheduler.preemptions > 0, "{}: nothing was preempted", case.label);
        assert!(stats::requests(&run).iter().any(|r| r.preemptions > 0));
    }
}

#[test]
fn a_repeated_prompt_reuses_its_cached_prefix() {
    for case in cases() {
        let mut requests = golden_requests(&case);
        let longest = case.golden.prompts.iter().max_by_key(|p| p.input_ids.len()).unwrap();
        let mut again = requests.iter().find(|r| r.prompt == longest.input_ids).unwrap().clone();
        again.arrival_ms = 10_000.0; // after the first has finished: its blocks are free but cached
        requests.push(again);
        let config = config(&case, Policy::Continuous, |c| c.block_size = 8);
        let run = run(&case, config, requests);
        let reports = stats::requests(&run);
        let last = reports.last().unwrap();
        assert_eq!(last.generated_ids, longest.greedy.new_ids, "{}: the cached prefix changed the output", case.label);
        assert_eq!(last.cached_tokens, (longest.input_ids.len() - 1) / 8 * 8, "{}", case.label);
        assert!(stats::stats(&run).prefix_hit_rate > 0.0);
        assert_eq!(run.scheduler.blocks.free_blocks(), run.scheduler.blocks.num_blocks());
    }
}

/// Two different prompts sharing full blocks: the 56-token prompt, then (after it finished)
/// that prompt followed by its first 8 greedy tokens. The second reuses exactly the 7 full
/// blocks of 8 they share and still continues with transformers' greedy ids.
#[test]
fn a_longer_prompt_reuses_exactly_the_shared_blocks() {
    for case in cases() {
        let longest = case.golden.prompts.iter().max_by_key(|p| p.input_ids.len()).unwrap();
        let first = Request {
            prompt: longest.input_ids.clone(),
            max_new_tokens: longest.greedy.new_ids.len(),
            sampling: SamplingParams::default(),
            eos_token_ids: vec![],
            arrival_ms: 0.0,
            logprobs: None,
        };
        let extended = [longest.input_ids.clone(), longest.greedy.new_ids[..8].to_vec()].concat();
        let second = Request { prompt: extended.clone(), max_new_tokens: 16, arrival_ms: 10_000.0, ..first.clone() };
        let run = run(&case, config(&case, Policy::Continuous, |c| c.block_size = 8), vec![first, second]);
        let reports = stats::requests(&run);
        assert_eq!(reports[0].generated_ids, longest.greedy.new_ids, "{}", case.label);
        assert_eq!(reports[1].generated_ids, longest.greedy.new_ids[8..], "{}: after the shared blocks", case.label);
        let shared = (extended.len() - 1) / 8 * 8;
        assert_eq!(shared, 56);
        assert_eq!(reports[1].cached_tokens, shared, "{}: the shared full blocks, no more, no fewer", case.label);
        assert_eq!(run.scheduler.blocks.free_blocks(), run.scheduler.blocks.num_blocks());
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_independent_of_the_batch() {
    let case = cases().into_iter().next().expect("a fixture model");
    let model = &case.loaded.model;
    let requests: Vec<Request> = case
        .golden
        .prompts
        .iter()
        .take(4)
        .enumerate()
        .map(|(i, p)| Request {
            prompt: p.input_ids.clone(),
            max_new_tokens: 12,
            sampling: SamplingParams {
                temperature: 0.9,
                top_k: 50,
                top_p: 0.95,
                repetition_penalty: 1.1,
                seed: 7 + i as u64,
                ..SamplingParams::default()
            },
            eos_token_ids: vec![],
            arrival_ms: 0.0,
            logprobs: None,
        })
        .collect();
    let batched = stats::requests(&run(&case, config(&case, Policy::Continuous, |_| {}), requests.clone()));
    let again = stats::requests(&run(&case, config(&case, Policy::Continuous, |_| {}), requests.clone()));
    for ((request, a), b) in requests.iter().zip(&batched).zip(&again) {
        assert_eq!(a.generated_ids, b.generated_ids, "{}: the same seed gave another text", case.label);
        let options = GenerateOptions {
            max_new_tokens: 12,
            sampling: request.sampling.clone(),
            kv: KvMode::Contiguous,
            ..GenerateOptions::default()
        };
        let alone = pollster::block_on(generate(model, &request.prompt, &options, None, |_| ControlFlow::Continue(())))
            .unwrap();
        assert_eq!(a.generated_ids, alone.new_ids, "{}: batching changed a seeded sample", case.label);
    }
}

#[test]
fn a_request_that_can_never_fit_is_refused_alone() {
    let case = cases().into_iter().next().expect("a fixture model");
    let mut requests = golden_requests(&case);
    let longest = requests.iter().map(|r| r.prompt.len() + r.max_new_tokens).max().unwrap();
    // A pool that holds every request but the longest.
    let config = config(&case, Policy::Continuous, |c| {
        c.block_size = 1;
        c.num_blocks = longest - 1;
    });
    let run = run(&case, config, std::mem::take(&mut requests));
    for (report, prompt) in stats::requests(&run).iter().zip(&case.golden.prompts) {
        if prompt.input_ids.len() + prompt.greedy.new_ids.len() == longest {
            assert!(report.error.as_deref().is_some_and(|e| e.contains("whole KV pool")), "{:?}", report.error);
        } else {
            assert_eq!(report.generated_ids, prompt.greedy.new_ids, "{}", prompt.name);
        }
    }
}
