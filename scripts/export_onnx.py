#!/usr/bin/env python3
"""Exports a GPT-2 folder (Hugging Face format) to ONNX in the layout transformers.js loads.

    scripts/export_onnx.py MODEL_DIR OUT_DIR

OUT_DIR gets a copy of MODEL_DIR's files (the weights too, for engines that read safetensors) and
`onnx/model.onnx`: one
graph for prefill and decode, inputs `input_ids`, `attention_mask`, `position_ids` and
`past_key_values.{i}.key|value` (batch, heads, past, head_dim; past may be 0), outputs `logits`
and `present.{i}.key|value`, the names transformers.js binds for a decoder with a cache. The export is
checked before it is written off: ONNX Runtime's logits for a prefill and one cached step must
equal transformers' own within 1e-4. Needs torch, transformers, onnx, onnxscript and onnxruntime
(`pip install onnx onnxscript onnxruntime`); used by scripts/compare_browser.sh.
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import DynamicCache, GPT2LMHeadModel



class WithFlatCache(torch.nn.Module):
    """GPT-2 with its cache as plain tensors in and out, as an ONNX graph needs them."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.layers = model.config.n_layer

    def forward(self, input_ids, attention_mask, position_ids, *past):
        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def names(layers, prefix):
    return [f"{prefix}.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def main(model_dir, out_dir):
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model = GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    cfg = model.config
    heads, head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
    wrapped = WithFlatCache(model)

    batch, past_len, new = 1, 3, 2
    ids = torch.randint(0, cfg.vocab_size, (batch, new))
    mask = torch.ones(batch, past_len + new, dtype=torch.int64)
    pos = torch.arange(past_len, past_len + new).unsqueeze(0)
    past = [torch.randn(batch, heads, past_len, head_dim) for _ in range(2 * cfg.n_layer)]

    in_names = ["input_ids", "attention_mask", "position_ids"] + names(cfg.n_layer, "past_key_values")
    out_names = ["logits"] + names(cfg.n_layer, "present")
    b, s, p, t = "batch_size", "sequence_length", "past_sequence_length", "total_sequence_length"
    axes = {"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: t}, "position_ids": {0: b, 1: s}, "logits": {0: b, 1: s}}
    for n in names(cfg.n_layer, "past_key_values"):
        axes[n] = {0: b, 2: p}
    for n in names(cfg.n_layer, "present"):
        axes[n] = {0: b, 2: t}

    (out_dir / "onnx").mkdir(parents=True, exist_ok=True)
    for file in model_dir.iterdir():
        if file.is_file() and not (out_dir / file.name).exists():
            shutil.copyfile(file, out_dir / file.name)
    # Written aside and moved into place once checked: a file at `path` is a good export.
    path, unchecked = out_dir / "onnx" / "model.onnx", out_dir / "onnx" / "unchecked.onnx"
    with torch.no_grad():
        torch.onnx.export(wrapped, (ids, mask, pos, *past), str(unchecked), input_names=in_names,
                          output_names=out_names, dynamic_axes=axes, opset_version=17, dynamo=False)
    # A fresh copy for the reference: tracing leaves state behind in the traced one.
    check(GPT2LMHeadModel.from_pretrained(model_dir).eval(), unchecked, cfg)
    unchecked.replace(path)
    print(f"exported {model_dir} -> {path} ({path.stat().st_size / 1e6:.1f} MB), checked against transformers")


def check(model, path, cfg):
    """Prefill from an empty cache, then one cached step: ONNX Runtime's logits equal transformers'."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    heads, head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
    prompt = torch.tensor([[464, 2068, 7586, 21831, 18045]])
    with torch.no_grad():
        ref = model(prompt, use_cache=True)
        nxt = int(ref.logits[0, -1].argmax())
        ref_next = model(torch.tensor([[nxt]]), past_key_values=ref.past_key_values)
    empty = {n: np.zeros((1, heads, 0, head_dim), np.float32) for n in names(cfg.n_layer, "past_key_values")}
    n = prompt.shape[1]
    outs = session.run(None, {"input_ids": prompt.numpy(), "attention_mask": np.ones((1, n), np.int64),
                              "position_ids": np.arange(n)[None], **empty})
    diff = np.abs(outs[0] - ref.logits.numpy()).max()
    # The same next token for both (a random model's top two can tie within rounding).
    past = dict(zip(names(cfg.n_layer, "past_key_values"), outs[1:]))
    step = session.run(None, {"input_ids": np.array([[nxt]]), "attention_mask": np.ones((1, n + 1), np.int64),
                              "position_ids": np.array([[n]]), **past})
    diff = max(diff, np.abs(step[0] - ref_next.logits.numpy()).max())
    if not diff <= 1e-4:
        sys.exit(f"the ONNX export differs from transformers: max |logit diff| {diff:.3g} > 1e-4")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
