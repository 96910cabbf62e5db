#!/usr/bin/env python3
"""Scoring goldens: golden_scoring.json for each fixture model.

Settings as the fixtures' other goldens: CPU, float32, eager attention, one thread.

- `prompt_logprobs[]`: for every prompt of golden.json, each token's log-probability given the
  tokens before it (the first has none) and the top 5 at each position, from one forward pass:
  what `echo` with `logprobs` returns.
- `perplexity[]`: transformers' strided perplexity recipe ("Perplexity of fixed-length
  models", its code as documented: windows of `context` tokens advancing by `stride`, earlier
  tokens masked with -100, `nll_sum += loss * (valid - 1)`) over `text` for several windows.

    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch "transformers==5.25.0" safetensors tokenizers
    /tmp/hf/bin/python scripts/gen_scoring_goldens.py tests/fixtures/gpt2
"""

import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, GPT2LMHeadModel

TOP = 5
TEXT = (
    "Inference is where a trained language model meets its users, and most of its cost is there. "
    "A transformer generates one token at a time: each step reads every weight once, attends over "
    "the keys and values of every token before it, and samples the next token from the logits. "
    "The key-value cache keeps those keys and values so that a step does not recompute the whole "
    "sequence; paging the cache into blocks lets many sequences share one pool of memory without "
    "reserving their longest possible length; continuous batching admits a new request as soon as "
    "another one finishes, so the device never waits for the slowest member of a batch. "
    "Speculative decoding lets a small draft propose several tokens that the large model checks in "
    "one pass, and beam search keeps the few best partial sequences instead of one. Lower precision "
    "halves or quarters the bytes each step reads, at a cost in accuracy that perplexity measures: "
    "the exponential of the mean negative log-likelihood of a text, token by token, each token "
    "predicted from the ones before it. A model that spreads its probability evenly over a "
    "vocabulary of fifty thousand tokens has a perplexity of fifty thousand; a good one on ordinary "
    "English text scores in the tens. Because a model sees a bounded context, a long text is scored "
    "in windows: each window scores only the tokens the previous one did not reach, with the tokens "
    "before them as context, and a smaller stride gives every token more context at more cost. "
) * 2
WINDOWS = [(256, 256), (256, 128), (64, 16), (100, 37)]


def prompt_logprobs(model, ids):
    logits = model(torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    out = [None]
    for i in range(1, len(ids)):
        top = torch.topk(logprobs[i - 1], TOP)
        out.append({
            "logprob": float(logprobs[i - 1, ids[i]]),
            "top_ids": top.indices.tolist(),
            "top_logprobs": top.values.tolist(),
        })
    return out


def perplexity(model, ids, max_length, stride):
    encodings = torch.tensor([ids])
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end_loc, windows = 0.0, 0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        outputs = model(input_ids, labels=target_ids)
        num_valid_tokens = (target_ids != -100).sum().item()
        num_loss_tokens = num_valid_tokens - target_ids.size(0)
        nll_sum += outputs.loss * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        windows += 1
        if end_loc == seq_len:
            break
    avg_nll = nll_sum / n_tokens
    return {"context": max_length, "stride": stride, "perplexity": float(torch.exp(avg_nll)),
            "nll": float(avg_nll), "tokens": n_tokens, "windows": windows}


def main(root):
    torch.set_num_threads(1)
    for model_dir in sorted(p for p in Path(root).iterdir() if (p / "golden.json").exists()):
        golden = json.loads((model_dir / "golden.json").read_text())
        model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        ids = tokenizer(TEXT)["input_ids"]
        with torch.no_grad():
            prompts = [{"prompt": p["name"], "input_ids": p["input_ids"], "logprobs": prompt_logprobs(model, p["input_ids"])}
                       for p in golden["prompts"]]
            windows = [perplexity(model, ids, c, s) for c, s in WINDOWS if c <= model.config.n_positions]
        out = {
            "schema_version": 1,
            "generated_by": f"transformers {transformers.__version__}, torch {torch.__version__}",
            "script": "scripts/gen_scoring_goldens.py",
            "top": TOP,
            "prompt_logprobs": prompts,
            "text": TEXT,
            "text_ids": ids,
            "perplexity": windows,
        }
        (model_dir / "golden_scoring.json").write_text(json.dumps(out) + "\n")
        print(f"{model_dir.name}: {len(ids)} text tokens, " + ", ".join(f"{w['context']}/{w['stride']}: {w['perplexity']:.2f}" for w in windows))


if __name__ == "__main__":
    main(sys.argv[1])
