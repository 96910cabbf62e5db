"""Trains the demo pair: a small GPT-2 (the target) and a smaller one (its draft), both on GPT-2's
own tokenizer, on the Rust sources of the crates in the local cargo registry whose licence is MIT
or Apache-2.0. Saved in Hugging Face's format with f16 weights, so the lab's pages (and `bench
speculative`) show text that means something, a draft that agrees with its target, and beams
that rank real alternatives, all without a network.

Deterministic for a given corpus: files are read in sorted order, the batches are drawn from a
seeded generator, and both models start from seeded weights. The book's chapter "The demo model
pair" gives the figures of the committed run.

    python scripts/train_demo_pair.py --registry ~/.cargo/registry/src --out web/demo

`--resume` continues the models already in --out (a second phase, with its own steps and
learning rate); TRAINING.json keeps every phase.
"""

import argparse
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import GPT2Config, GPT2LMHeadModel

# Two shapes: the draft's decode step should cost well under half the target's. Both keep
# GPT-2's full vocabulary (its tokenizer's ids), which is most of their weights.
SHAPES = {
    "target": dict(n_embd=192, n_layer=4, n_head=6),
    "draft": dict(n_embd=64, n_layer=2, n_head=2),
}
CONTEXT = 256
LICENCE = re.compile(r'^\s*license\s*=\s*"([^"]+)"', re.M)


def permissive(licence: str) -> bool:
    """MIT or Apache-2.0 among the alternatives ('MIT OR Apache-2.0', 'MIT/Apache-2.0', …)."""
    return any(p in ("MIT", "Apache-2.0") for p in re.split(r"[\s/()]+|\bOR\b|\bAND\b", licence))


def dedent(text: str) -> str:
    """Each line without its indentation, and no runs of blank lines. GPT-2's tokenizer spends a
    token per space of indentation, and a small model then learns mostly to continue runs of
    spaces: without them its greedy text is code, not whitespace."""
    lines = [line.strip() for line in text.splitlines()]
    return "\n".join(line for i, line in enumerate(lines) if line or (i and lines[i - 1]))


def corpus(registry: Path, max_bytes: int, out: Path, flat: bool):
    """The text (each file ends with GPT-2's <|endoftext|>) and the manifest of crates used."""
    texts, crates, total = [], [], 0
    # One version of each crate (the last in sorted order), from every registry index.
    newest = {}
    for index in sorted(p for p in registry.iterdir() if p.is_dir()):
        for crate in sorted(p for p in index.iterdir() if p.is_dir()):
            newest[re.sub(r"-\d+\.\d+\.\d+.*$", "", crate.name)] = crate
    for _, crate in sorted(newest.items()):
        manifest = crate / "Cargo.toml"
        if not manifest.exists():
            continue
        m = LICENCE.search(manifest.read_text(errors="replace"))
        if not m or not permissive(m.group(1)):
            continue
        files = sorted(crate.glob("README.md")) + sorted((crate / "src").rglob("*.rs"))
        used = 0
        for f in files:
            if total >= max_bytes:
                break
            text = f.read_text(errors="replace")
            if len(text) > 100_000 or "\0" in text:
                continue
            if flat:
                text = dedent(text)
            texts.append(text + "<|endoftext|>")
            total += len(text)
            used += 1
        if used:
            crates.append({"crate": crate.name, "license": m.group(1), "files": used})
    (out / "CORPUS.json").write_text(json.dumps({"bytes": total, "crates": crates}, indent=1))
    return texts, total, len(crates)


def train(name, shape, ids, valid, args):
    torch.manual_seed(args.seed)
    if args.resume:
        model = GPT2LMHeadModel.from_pretrained(args.out / name).float()
    else:
        config = GPT2Config(
            vocab_size=50257, n_positions=CONTEXT, **shape,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=50256, eos_token_id=50256,
        )
        model = GPT2LMHeadModel(config)
    params = sum(p.numel() for p in model.parameters())
    steps = args.steps[name]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    # A resumed phase draws other batches than the first one did.
    draws = torch.Generator().manual_seed(args.seed + (1 if args.resume else 0))
    start = time.time()
    model.train()
    for step in range(steps):
        at = torch.randint(0, len(ids) - CONTEXT - 1, (args.batch,), generator=draws)
        x = torch.stack([ids[a:a + CONTEXT] for a in at])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"{name} step {step}/{steps} loss {loss.item():.3f} "
                  f"({time.time() - start:.0f} s)", flush=True)
    model.eval()
    with torch.no_grad():
        chunks = valid[: len(valid) // CONTEXT * CONTEXT].view(-1, CONTEXT)[:64]
        valid_loss = sum(model(input_ids=c[None], labels=c[None]).loss.item() for c in chunks) / len(chunks)
    return model, params, valid_loss, time.time() - start


def earlier_phases(record, name):
    """The phases TRAINING.json holds for `name` (a single-phase record has its figures inline)."""
    entry = record.get(name, {})
    if "phases" in entry:
        return entry["phases"]
    if "steps" in entry:
        return [{"steps": entry["steps"], "lr": record.get("lr"), "tokens": entry["tokens_seen"],
                 "valid_loss": entry["valid_loss"], "train_seconds": entry["train_seconds"]}]
    return []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", type=Path, default=Path.home() / ".cargo/registry/src")
    ap.add_argument("--tokenizer", type=Path, default=Path("tests/fixtures/gpt2/tokenizer/tokenizer.json"))
    ap.add_argument("--out", type=Path, default=Path("web/demo"))
    ap.add_argument("--max-bytes", type=int, default=30_000_000)
    ap.add_argument("--target-steps", type=int, default=1500)
    ap.add_argument("--draft-steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--only", choices=list(SHAPES), help="train one of the pair")
    ap.add_argument("--resume", action="store_true", help="continue the models in --out")
    ap.add_argument("--dedent", action="store_true", help="train on the sources without indentation")
    args = ap.parse_args()
    args.steps = {"target": args.target_steps, "draft": args.draft_steps}
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    texts, nbytes, ncrates = corpus(args.registry, args.max_bytes, args.out, args.dedent)
    tok = Tokenizer.from_file(str(args.tokenizer))
    ids = torch.tensor([i for enc in tok.encode_batch(texts) for i in enc.ids], dtype=torch.long)
    cut = len(ids) - len(ids) // 100
    train_ids, valid = ids[:cut], ids[cut:]
    print(f"corpus: {nbytes / 1e6:.1f} MB of text from {ncrates} crates, {len(ids) / 1e6:.2f} M tokens", flush=True)

    path = args.out / "TRAINING.json"
    report = {"corpus_bytes": nbytes, "corpus_crates": ncrates, "corpus_tokens": len(ids),
              "context": CONTEXT, "batch": args.batch, "seed": args.seed}
    for name in [args.only] if args.only else SHAPES:
        model, params, valid_loss, seconds = train(name, SHAPES[name], train_ids, valid, args)
        folder = args.out / name
        if folder.exists():
            shutil.rmtree(folder)
        model.half().save_pretrained(folder, safe_serialization=True)
        for f in ("tokenizer.json",):
            shutil.copy(args.tokenizer.parent / f, folder / f)
        phase = {"steps": args.steps[name], "lr": args.lr, "dedent": args.dedent, "tokens": args.steps[name] * args.batch * CONTEXT,
                 "valid_loss": round(valid_loss, 4), "train_seconds": round(seconds)}
        old = json.loads(path.read_text()) if path.exists() else {}
        phases = (earlier_phases(old, name) if args.resume else []) + [phase]
        report[name] = {**SHAPES[name], "params": params, "phases": phases,
                        "tokens_seen": sum(p["tokens"] for p in phases),
                        "valid_loss": phase["valid_loss"], "train_seconds": sum(p["train_seconds"] for p in phases),
                        "weights_bytes": (folder / "model.safetensors").stat().st_size}
        print(json.dumps({name: report[name]}), flush=True)
        # Written after each model, over what the file holds now (another run may have added to it).
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**old, **report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
