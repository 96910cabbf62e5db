"""Decode speed of llama.cpp (through llama-cpp-python) on the same job as
`inferlab bench decode --batch 1`: a GGUF of the same GPT-2 weights, a random prompt, greedy
decoding with llama.cpp's KV cache, one token per step, timed per step. Batch 1 only: the
Python binding decodes one sequence. scripts/compare_cpu.sh runs it beside inferlab and HF:

    python scripts/llama_decode_bench.py --gguf model-f32.gguf --threads 2 --new-tokens 64

Needs `pip install llama-cpp-python` (built from source here). Prints one JSON object.
"""

import argparse
import json
import random
import time

import numpy as np
from llama_cpp import Llama, __version__


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    llm = Llama(model_path=args.gguf, n_ctx=args.prompt_tokens + args.new_tokens + 8, n_threads=args.threads,
                n_threads_batch=args.threads, n_batch=512, verbose=False)
    rng = random.Random(args.seed)
    prompt = [rng.randrange(llm.n_vocab()) for _ in range(args.prompt_tokens)]

    def run(new_tokens: int) -> tuple[list[float], list[int]]:
        llm.reset()
        steps, ids, feed = [], [], prompt
        for _ in range(new_tokens):
            start = time.perf_counter()
            llm.eval(feed)
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            steps.append((time.perf_counter() - start) * 1000)
            ids.append(token)
            feed = [token]
        return steps, ids

    run(2)  # warm-up
    steps, ids = run(args.new_tokens)
    decode = steps[1:]
    print(json.dumps({
        "impl": f"llama.cpp via llama-cpp-python {__version__}",
        "threads": args.threads,
        "model": args.gguf,
        "batch": 1,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "ttft_ms": steps[0],
        "decode_tokens_per_s": len(decode) * 1000 / sum(decode) if decode else 0.0,
        "per_token_ms_mean": sum(decode) / len(decode) if decode else 0.0,
        "per_token_ms": steps,
        "ids": ids,
    }))


if __name__ == "__main__":
    main()
