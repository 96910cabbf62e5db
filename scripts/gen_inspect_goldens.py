#!/usr/bin/env python3
"""Goldens for `inferlab inspect`: golden_inspect.json for each fixture model.

Settings as the fixtures' other goldens: CPU, float32, eager attention (the only one that
returns attention probabilities), one thread. For every prompt of golden.json:

- `attentions[layer][head][query][key]`: `output_attentions=True`, post-softmax, causal;
- `residual_norms[layer][position]`: the L2 norm of each block's output (a forward hook on
  the block: transformers' last `hidden_states` entry has the final LayerNorm applied);
- `lens[layer]`: the logit lens after block `layer + 1`: that block's output through the
  final LayerNorm and the tied head, softmaxed, top 5 ids and probabilities at every position
  (after the last block, the model's own logits);
- `next_token` (greedy after the prompt) and `decode_attentions[layer][head][key]`: the
  attention of that token's query over the prompt and itself, from a pass over both.

    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch "transformers==5.25.0" safetensors
    /tmp/hf/bin/python scripts/gen_inspect_goldens.py tests/fixtures/gpt2
"""

import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import GPT2LMHeadModel

TOP = 5


def rounded(values):
    """Nested lists of floats to 8 significant digits: far below the tests' 1e-4."""
    if isinstance(values, list):
        return [rounded(v) for v in values]
    return float(f"{values:.8g}")


def inspect(model, ids):
    outputs = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: outputs.append(out[0] if isinstance(out, tuple) else out))
             for block in model.transformer.h]
    try:
        out = model(torch.tensor([ids]), output_attentions=True)
    finally:
        for hook in hooks:
            hook.remove()
    lens = []
    for hidden in outputs:
        probs = torch.softmax(model.lm_head(model.transformer.ln_f(hidden[0])), dim=-1)
        top = torch.topk(probs, TOP, dim=-1)
        lens.append({"top_ids": top.indices.tolist(), "top_probs": rounded(top.values.tolist())})
    next_token = int(out.logits[0, -1].argmax())
    extended = model(torch.tensor([ids + [next_token]]), output_attentions=True)
    return {
        "attentions": [rounded(a[0].tolist()) for a in out.attentions],
        "next_token": next_token,
        "decode_attentions": [rounded(a[0, :, -1].tolist()) for a in extended.attentions],
        "residual_norms": [rounded(h[0].norm(dim=-1).tolist()) for h in outputs],
        "lens": lens,
    }


def main(root):
    torch.set_num_threads(1)
    for model_dir in sorted(p for p in Path(root).iterdir() if (p / "golden.json").exists()):
        golden = json.loads((model_dir / "golden.json").read_text())
        model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
        cases = []
        with torch.no_grad():
            for prompt in golden["prompts"]:
                cases.append({"prompt": prompt["name"], "input_ids": prompt["input_ids"], **inspect(model, prompt["input_ids"])})
        out = {
            "schema_version": 1,
            "generated_by": f"transformers {transformers.__version__}, torch {torch.__version__}",
            "script": "scripts/gen_inspect_goldens.py",
            "top": TOP,
            "cases": cases,
        }
        path = model_dir / "golden_inspect.json"
        path.write_text(json.dumps(out) + "\n")
        print(f"{model_dir.name}: {len(cases)} prompts, {path.stat().st_size >> 10} KiB")


if __name__ == "__main__":
    main(sys.argv[1])
