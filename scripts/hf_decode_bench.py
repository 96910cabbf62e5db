"""Decode speed of Hugging Face transformers on the same job as `inferlab bench decode`:
a GPT-2 (a randomly initialised one of a named shape, or a model folder), a batch of random
prompts, greedy decoding with the KV cache, one token per row per step, timed per step.
scripts/compare_cpu.sh runs it beside inferlab and llama.cpp:

    python scripts/hf_decode_bench.py --config gpt2 --batch 8 --new-tokens 64
    python scripts/hf_decode_bench.py --model DIR --batch 1

`--save DIR` writes the random model (safetensors, with GPT-2's tokenizer from --tokenizer)
so every engine can load the very same weights. Needs `pip install torch transformers`.
Prints one JSON object.
"""

import argparse
import json
import shutil
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
    parser.add_argument("--model", help="a model folder instead of a random model")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write the random model to this folder and exit")
    parser.add_argument("--tokenizer", help="tokenizer.json to save beside it")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    if args.model:
        model = GPT2LMHeadModel.from_pretrained(args.model, attn_implementation="eager").eval()
        name = args.model
    else:
        n_layer, n_embd, n_head = SHAPES[args.config]
        config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, attn_implementation="eager")
        model = GPT2LMHeadModel(config).eval()
        name = f"random:{args.config}"
    if args.save:
        model.save_pretrained(args.save, safe_serialization=True)
        # The published GPT-2 configs also carry n_ctx, which llama.cpp's converter reads.
        with open(f"{args.save}/config.json") as f:
            config = json.load(f)
        config["n_ctx"] = config["n_positions"]
        with open(f"{args.save}/config.json", "w") as f:
            json.dump(config, f, indent=2)
        if args.tokenizer:
            shutil.copy(args.tokenizer, f"{args.save}/tokenizer.json")
        return
    prompt = torch.randint(0, model.config.vocab_size, (args.batch, args.prompt_tokens))

    def run(new_tokens: int) -> list[float]:
        steps = []
        with torch.inference_mode():
            ids, past = prompt, None
            for _ in range(new_tokens):
                start = time.perf_counter()
                out = model(input_ids=ids, past_key_values=past, use_cache=True)
                ids = out.logits[:, -1, :].argmax(-1, keepdim=True)
                past = out.past_key_values
                steps.append((time.perf_counter() - start) * 1000)
        return steps

    run(2)  # warm-up
    steps = run(args.new_tokens)
    decode = steps[1:]
    print(json.dumps({
        "impl": f"transformers {__import__('transformers').__version__} / torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "model": name,
        "batch": args.batch,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "ttft_ms": steps[0],
        "decode_tokens_per_s": args.batch * len(decode) * 1000 / sum(decode) if decode else 0.0,
        "per_token_ms_mean": sum(decode) / len(decode) if decode else 0.0,
        "per_token_ms": steps,
    }))


if __name__ == "__main__":
    main()
