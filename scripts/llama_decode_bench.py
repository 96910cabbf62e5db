"""Decode speed of llama.cpp (through llama-cpp-python's bindings of its C API) on the same job
as `inferlab bench decode --batch B`: a GGUF of the same GPT-2 weights, B random prompts, greedy
decoding with llama.cpp's KV cache, one token per sequence per step, all B sequences in one
`llama_decode` per step (one batch with a sequence id per row, as llama.cpp's own
`llama-batched` example does), timed per step. scripts/compare_cpu.sh runs it beside inferlab
and HF:

    python scripts/llama_decode_bench.py --gguf model-f32.gguf --threads 2 --batch 8 --new-tokens 64

Needs `pip install llama-cpp-python` (built from source here). Prints one JSON object.
"""

import argparse
import ctypes
import json
import random
import time

import llama_cpp as ll
import numpy as np

# llama.cpp's log lines, dropped (kept referenced: the C side calls it after main returns).
QUIET = ll.llama_log_callback(lambda level, text, data: None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = args.batch

    ll.llama_backend_init()
    ll.llama_log_set(QUIET, ctypes.c_void_p())
    model = ll.llama_model_load_from_file(args.gguf.encode(), ll.llama_model_default_params())
    if not model:
        raise SystemExit(f"llama.cpp could not load {args.gguf}")
    n_vocab = ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(model))
    params = ll.llama_context_default_params()
    per_row = args.prompt_tokens + args.new_tokens + 8
    params.n_ctx = rows * per_row
    params.n_batch = max(rows * args.prompt_tokens, 512)
    params.n_ubatch = params.n_batch
    params.n_seq_max = rows
    params.n_threads = params.n_threads_batch = args.threads
    ctx = ll.llama_init_from_model(model, params)
    batch = ll.llama_batch_init(params.n_batch, 0, rows)
    rng = random.Random(args.seed)
    prompts = [[rng.randrange(n_vocab) for _ in range(args.prompt_tokens)] for _ in range(rows)]

    def decode(feeds: list[list[int]], start: int) -> list[int]:
        """Feeds each row its tokens at positions `start..`; the greedy next token of each row."""
        batch.n_tokens = 0
        last = []
        for seq, feed in enumerate(feeds):
            for i, token in enumerate(feed):
                at = batch.n_tokens
                batch.token[at], batch.pos[at] = token, start + i
                batch.n_seq_id[at], batch.seq_id[at][0] = 1, seq
                batch.logits[at] = i == len(feed) - 1
                batch.n_tokens += 1
            last.append(batch.n_tokens - 1)
        if ll.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")
        return [int(np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, at), shape=(n_vocab,)).argmax()) for at in last]

    def run(new_tokens: int) -> tuple[list[float], list[list[int]]]:
        ll.llama_memory_clear(ll.llama_get_memory(ctx), True)
        steps, ids, feeds, start = [], [], prompts, 0
        for _ in range(new_tokens):
            began = time.perf_counter()
            picks = decode(feeds, start)
            steps.append((time.perf_counter() - began) * 1000)
            start += len(feeds[0])
            ids.append(picks)
            feeds = [[t] for t in picks]
        return steps, ids

    run(2)  # warm-up
    steps, ids = run(args.new_tokens)
    decode_steps = steps[1:]
    print(json.dumps({
        "impl": f"llama.cpp via llama-cpp-python {ll.__version__} (C API, one llama_decode per step)",
        "threads": args.threads,
        "model": args.gguf,
        "batch": rows,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "ttft_ms": steps[0],
        "decode_tokens_per_s": rows * len(decode_steps) * 1000 / sum(decode_steps) if decode_steps else 0.0,
        "per_token_ms_mean": sum(decode_steps) / len(decode_steps) if decode_steps else 0.0,
        "per_token_ms": steps,
        "ids": [list(row) for row in zip(*ids)],
    }))
    ll.llama_batch_free(batch)
    ll.llama_free(ctx)
    ll.llama_model_free(model)


if __name__ == "__main__":
    main()
