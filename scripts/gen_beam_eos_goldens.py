#!/usr/bin/env python3
"""Beam-search goldens where hypotheses really end: golden_beam_eos.json for each fixture model.

Settings as the fixtures' other goldens: CPU, float32, eager attention, one thread. The
fixtures' beam goldens end on EOS 50256, which random weights never emit, so
`early_stopping`, `length_penalty` and the rank rule for finished hypotheses only act at the
last step there. Here EOS is a token the unconstrained beams do emit (the two most frequent
new tokens of a 4-beam search), so hypotheses finish at every step, at every rank, and the
options decide which are kept and when the search stops.

For each model, prompt ("few_tokens", "code") and EOS: every combination of (num_beams,
num_return_sequences) in (2, 2), (4, 4), (4, 2); length_penalty 0.5, 1, 2; early_stopping
true, false, "never"; no_repeat_ngram_size 0, 2. max_new_tokens 10, pad 50256.

    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch "transformers==5.25.0" safetensors
    /tmp/hf/bin/python scripts/gen_beam_eos_goldens.py tests/fixtures/gpt2
"""

import itertools
import json
import sys
from collections import Counter
from pathlib import Path

import torch
import transformers
from transformers import GPT2LMHeadModel

PROMPTS = ["few_tokens", "code"]
SHAPES = [(2, 2), (4, 4), (4, 2)]
LENGTH_PENALTIES = [0.5, 1.0, 2.0]
EARLY_STOPPING = [True, False, "never"]
NGRAMS = [0, 2]
MAX_NEW = 10
PAD = 50256


def beam(model, ids, **params):
    out = model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=MAX_NEW,
        pad_token_id=PAD,
        output_scores=True,
        return_dict_in_generate=True,
        **params,
    )
    return [row[len(ids):].tolist() for row in out.sequences], out.sequences_scores.tolist()


def finished_length(new_ids, eos):
    """New tokens up to and including EOS; None when the hypothesis ran to max_new_tokens."""
    return new_ids.index(eos) + 1 if eos in new_ids else None


def main(root):
    torch.set_num_threads(1)
    for model_dir in sorted(p for p in Path(root).iterdir() if (p / "golden.json").exists()):
        golden = json.loads((model_dir / "golden.json").read_text())
        prompts = {p["name"]: p["input_ids"] for p in golden["prompts"]}
        model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
        cases = []
        with torch.no_grad():
            for name in PROMPTS:
                ids = prompts[name]
                free, _ = beam(model, ids, num_beams=4, num_return_sequences=4, eos_token_id=PAD)
                eos_ids = [t for t, _ in Counter(t for row in free for t in row).most_common(2)]
                for eos, (k, n), lp, es, ngram in itertools.product(
                    eos_ids, SHAPES, LENGTH_PENALTIES, EARLY_STOPPING, NGRAMS
                ):
                    params = {
                        "num_beams": k,
                        "num_return_sequences": n,
                        "max_new_tokens": MAX_NEW,
                        "length_penalty": lp,
                        "early_stopping": es,
                        "no_repeat_ngram_size": ngram,
                        "eos_token_id": eos,
                    }
                    gen = {key: v for key, v in params.items() if key != "max_new_tokens"}
                    new_ids, scores = beam(model, ids, **gen)
                    cases.append(
                        {
                            "prompt": name,
                            "prompt_ids": ids,
                            "params": params,
                            "new_ids": new_ids,
                            "sequences_scores": scores,
                            "finished_lengths": [finished_length(row, eos) for row in new_ids],
                        }
                    )
        out = {
            "schema_version": 1,
            "generated_by": f"transformers {transformers.__version__}, torch {torch.__version__}",
            "script": "scripts/gen_beam_eos_goldens.py",
            "cases": cases,
        }
        (model_dir / "golden_beam_eos.json").write_text(json.dumps(out, indent=1) + "\n")
        ended = sum(any(x is not None for x in c["finished_lengths"]) for c in cases)
        print(f"{model_dir.name}: {len(cases)} cases, {ended} with a hypothesis ended by EOS")


if __name__ == "__main__":
    main(sys.argv[1])
