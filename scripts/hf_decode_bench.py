"""Decode speed of Hugging Face transformers on the same job as `inferlab bench kv`:
a randomly initialised GPT-2 of a named shape, an 8-token prompt, greedy decoding with the
KV cache, one token per step, timed per step. Run it right after `inferlab bench kv` in the
same shell to compare tokens/s side by side:

    python scripts/hf_decode_bench.py --config gpt2 --new-tokens 64

Needs `pip install torch transformers`. Prints one JSON object.
"""

import argparse
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

SHAPES = {  # n_layer, n_embd, n_head: the published GPT-2 family
    "distilgpt2": (6, 768, 12),
    "gpt2": (12, 768, 12),
    "gpt2-medium": (24, 1024, 16),
    "gpt2-large": (36, 1280, 20),
    "gpt2-xl": (48, 1600, 25),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="gpt2", choices=SHAPES)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    n_layer, n_embd, n_head = SHAPES[args.config]
    torch.manual_seed(args.seed)
    config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, attn_implementation="eager")
    model = GPT2LMHeadModel(config).eval()
    prompt = torch.randint(0, config.vocab_size, (1, args.prompt_tokens))

    def run(new_tokens: int) -> list[float]:
        steps = []
        with torch.inference_mode():
            ids, past = prompt, None
            for _ in range(new_tokens):
                start = time.perf_counter()
                out = model(input_ids=ids, past_key_values=past, use_cache=True)
                ids = out.logits[:, -1:].argmax(-1)
                past = out.past_key_values
                steps.append((time.perf_counter() - start) * 1000)
        return steps

    run(2)  # warm-up
    steps = run(args.new_tokens)
    decode = steps[1:]
    print(json.dumps({
        "impl": f"transformers {__import__('transformers').__version__} / torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "model": f"random:{args.config}",
        "new_tokens": args.new_tokens,
        "ttft_ms": steps[0],
        "decode_tokens_per_s": len(decode) * 1000 / sum(decode) if decode else 0.0,
        "per_token_ms": steps,
    }))


if __name__ == "__main__":
    main()
