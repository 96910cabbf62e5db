"""Hugging Face transformers GPT-2, served naively: the baseline side of `inferlab bench serve`.

One request at a time (an asyncio.Lock around a single worker thread), no batching: a
GPT2LMHeadModel in float32 on the CPU, decoded token by token with its KV cache
(past_key_values), behind the same OpenAI-compatible subset as our server:

    POST /v1/completions  {model, prompt: str | [token ids], max_tokens, temperature (0 = greedy),
                           top_p, seed, stream, stream_options.include_usage, ignore_eos}
    GET  /v1/models, GET /health

Generation stops after max_tokens, or at EOS (50256, unless ignore_eos; finish_reason "stop",
its text not sent). A stream sends one chunk per token, so time to first token and inter-token
latency can be measured.

Install and run:

    pip install torch transformers fastapi uvicorn
    python scripts/hf_server.py --model tests/fixtures/gpt2/gpt2-tiny --port 8001
    python scripts/hf_server.py --model random:distilgpt2 \
        --tokenizer tests/fixtures/gpt2/tokenizer --port 8001 --threads 2

`--model` is a local HF folder (config.json, model.safetensors, tokenizer files) or `random:<shape>`,
a randomly initialised (seed 0) GPT-2 of a published shape, which needs `--tokenizer DIR`.
"""

import argparse
import asyncio
import inspect
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import torch
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

SHAPES = {"distilgpt2": (6, 768, 12), "gpt2": (12, 768, 12), "gpt2-medium": (24, 1024, 16),
          "gpt2-large": (36, 1280, 20), "gpt2-xl": (48, 1600, 25)}  # n_layer, n_embd, n_head
# The KV-cache argument (and output field) is `cache` in newer transformers, `past_key_values` before.
CACHE = "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"


class CompletionRequest(BaseModel):
    model: str | None = None
    prompt: str | list[int]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stream: bool = False
    stream_options: dict | None = None  # {"include_usage": true}: a last chunk with usage
    ignore_eos: bool = False


def load(spec: str, attn: str) -> GPT2LMHeadModel:
    if spec.startswith("random:"):
        n_layer, n_embd, n_head = SHAPES[spec.removeprefix("random:")]
        torch.manual_seed(0)
        config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, attn_implementation=attn)
        model = GPT2LMHeadModel(config)
    else:
        model = GPT2LMHeadModel.from_pretrained(spec, dtype=torch.float32, attn_implementation=attn)
    return model.eval()


def generate(model, prompt_ids, max_tokens, temperature, top_p, seed, eos):
    """Yields new token ids one at a time, ending after `eos` (if not None) or max_tokens:
    greedy when temperature == 0, else top-p sampling."""
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    ids, past = torch.tensor([prompt_ids]), None
    with torch.inference_mode():
        for _ in range(max_tokens):
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{CACHE: past})
            logits, past = out.logits[0, -1].float(), getattr(out, CACHE)
            if temperature <= 0:
                token = int(logits.argmax())
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                if top_p < 1.0:
                    sorted_p, order = probs.sort(descending=True)
                    keep = sorted_p.cumsum(0) - sorted_p < top_p  # smallest set reaching top_p
                    probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
                token = int(torch.multinomial(probs, 1, generator=rng))
            yield token
            if token == eos:
                return
            ids = torch.tensor([[token]])


def make_app(model, tokenizer, name: str) -> FastAPI:
    app = FastAPI()
    lock = asyncio.Lock()  # one request at a time ...
    worker = ThreadPoolExecutor(max_workers=1)  # ... on one worker thread
    n_ctx = model.config.n_positions

    def error(message, param=None, code=None):
        body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
        return JSONResponse(body, status_code=400)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                            "owned_by": "hf-transformers", "max_model_len": n_ctx}]}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        ids = tokenizer.encode(req.prompt) if isinstance(req.prompt, str) else list(req.prompt)
        if not ids:
            return error("prompt is empty", "prompt")
        if any(t < 0 or t >= model.config.vocab_size for t in ids):
            return error("prompt token id out of range", "prompt")
        if req.max_tokens < 1 or len(ids) + req.max_tokens > n_ctx:
            return error(f"prompt ({len(ids)}) + max_tokens ({req.max_tokens}) must fit the context ({n_ctx})",
                         "max_tokens", "context_length_exceeded")
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        model_name = req.model or name

        def body(choices, **extra):
            return {"id": cid, "object": "text_completion", "created": created, "model": model_name,
                    "choices": choices, **extra}

        def choice(text, finish):
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

        def usage(n):
            return {"prompt_tokens": len(ids), "completion_tokens": n, "total_tokens": len(ids) + n}

        def sse(data):
            return "data: " + json.dumps(data, separators=(",", ":")) + "\n\n"

        stop_id = None if req.ignore_eos else model.config.eos_token_id
        tokens = generate(model, ids, req.max_tokens, req.temperature, req.top_p, req.seed, stop_id)
        loop = asyncio.get_running_loop()

        if not req.stream:
            async with lock:
                new = await loop.run_in_executor(worker, list, tokens)
            stopped = new[-1] == stop_id
            text = tokenizer.decode(new[:-1] if stopped else new)
            return body([choice(text, "stop" if stopped else "length")], usage=usage(len(new)))

        async def events():
            async with lock:
                new, sent = [], ""
                for i in range(req.max_tokens):  # one chunk per generated token
                    token = await loop.run_in_executor(worker, next, tokens)
                    stopped = token == stop_id
                    last = stopped or i == req.max_tokens - 1
                    new += [] if stopped else [token]
                    # Decode everything so far and send the new suffix; hold back a split UTF-8 char.
                    text = tokenizer.decode(new)
                    delta = "" if (text.endswith("\ufffd") and not last) else text[len(sent):]
                    sent += delta
                    yield sse(body([choice(delta, ("stop" if stopped else "length") if last else None)]))
                    if last:
                        break
            if (req.stream_options or {}).get("include_usage"):
                yield sse(body([], usage=usage(i + 1)))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="local HF folder, or random:" + "|".join(SHAPES))
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the model folder)")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer_dir = args.tokenizer or (None if args.model.startswith("random:") else args.model)
    if tokenizer_dir is None:
        parser.error("--tokenizer DIR is needed with a random: model")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = load(args.model, args.attn)
    name = args.model if args.model.startswith("random:") else os.path.basename(os.path.normpath(args.model))
    print(f"hf_server: {name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), torch "
          f"{torch.__version__} threads={torch.get_num_threads()} attn={args.attn} http://{args.host}:{args.port}", flush=True)
    uvicorn.run(make_app(model, tokenizer, name), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
