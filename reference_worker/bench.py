"""Prefill and decode speed of the engine on a model: a table of tokens/s.

    python -m reference_worker.bench --model PATH [--backend numpy|cuda] [--llama-cpp]

Prefill runs prompts of several lengths through the adapter in the engine's chunks; decode generates
greedily through `Engine.generate`, the server's own path, and times the steps after the
first. Beside decode tokens/s it prints the weight bytes streamed per second at that rate
(bytes of the backend's weight matrices x tokens/s: float32 on numpy, the file's encoding on
cuda), which says how close decode is to the memory-bandwidth limit. --llama-cpp adds llama.cpp's
decode on the same file and prompt (llama-cpp-python, the `goldens` extra; on the GPU where its
build offloads), and a CUDA run ends with the VRAM the engine holds (weights, the KV cache
allocated at load, scratch) and that cache's size.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields

import numpy as np

from reference_worker.adapter import PREFILL_CHUNK
from reference_worker.engine import Engine, SamplingParams

PROMPT = "Write a haiku about GPU computing"


def time_prefill(engine: Engine, n_tokens: int, repeats: int) -> float:
    """Best-of-repeats seconds to run n_tokens prompt tokens through the model, in the engine's
    prefill chunks, through its KV cache."""
    ids = np.random.default_rng(0).integers(0, engine.vocab_size, n_tokens).tolist()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, n_tokens, PREFILL_CHUNK):
            engine.adapter.forward(ids[start:start + PREFILL_CHUNK], start, engine.cache)
        best = min(best, time.perf_counter() - started)
    return best


def weight_bytes(engine: Engine) -> int:
    """Bytes of the weight matrices one decode step reads, as the backend holds them (a layer's
    matrices are the fields of its adapter's Layer named w*, in llama.py and gpt2.py alike; of a
    gpt-oss layer's experts, the routed share: expert_used_count of expert_count)."""
    adapter = engine.adapter
    matrices = [adapter.output] + [getattr(layer, f.name) for layer in adapter.layers for f in fields(layer)
                                   if f.name.startswith("w")]
    experts = sum(layer.experts.nbytes for layer in adapter.layers if hasattr(layer, "experts"))
    routed = experts * adapter.hp.n_expert_used // adapter.hp.n_expert if experts else 0
    return sum(m.nbytes for m in matrices) + routed


def time_decode(engine: Engine, n_tokens: int) -> tuple[int, float]:
    """(tokens, seconds) for the decode steps after the first token of a greedy generation."""
    gen = engine.generate(PROMPT, n_tokens + 1, SamplingParams(temperature=0.0))
    stamps = [time.perf_counter() for _ in gen]
    gen.close()
    return len(stamps) - 1, stamps[-1] - stamps[0]


def time_llama_cpp_decode(path, n_tokens: int) -> tuple[int, float, str]:
    """(tokens, seconds, "gpu" or "cpu") for llama.cpp's greedy decode steps after the first
    token, on the same file and prompt as `time_decode`, every layer offloaded where it can."""
    import llama_cpp

    where = "gpu" if llama_cpp.llama_supports_gpu_offload() else "cpu"
    llm = llama_cpp.Llama(model_path=str(path), n_gpu_layers=-1 if where == "gpu" else 0, n_ctx=512, verbose=False)
    stamps = []
    for _ in llm.generate(llm.tokenize(PROMPT.encode("utf-8"), add_bos=True, special=True), temp=0.0):
        stamps.append(time.perf_counter())
        if len(stamps) > n_tokens:
            break
    llm.close()
    return len(stamps) - 1, stamps[-1] - stamps[0], where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_worker.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="GGUF path (default: the real test model, fetched if needed)")
    parser.add_argument("--backend", default="numpy", choices=("numpy", "cuda"))
    parser.add_argument("--device", default=0, type=int)
    parser.add_argument("--prompt-tokens", default="16,64,256", help="comma-separated prefill lengths")
    parser.add_argument("--decode-tokens", default=32, type=int)
    parser.add_argument("--repeats", default=2, type=int)
    parser.add_argument("--llama-cpp", action="store_true", help="also time llama.cpp's decode on the same file")
    args = parser.parse_args(argv)
    if args.model is None:
        from reference_worker.models import real_model_path
        args.model = real_model_path()

    started = time.perf_counter()
    engine = Engine.load(args.model, backend=args.backend, device=args.device)
    load_s = time.perf_counter() - started
    file_gb = engine.gguf.path.stat().st_size / 1e9
    streamed_gb = weight_bytes(engine) / 1e9
    print(f"model {engine.model_name} ({engine.quant_kind}, {file_gb:.3f} GB file), backend {engine.backend}, "
          f"loaded in {load_s:.1f} s; decode reads {streamed_gb:.3f} GB of weights a token")
    print(f"| {'phase':<8} | {'tokens':>6} | {'seconds':>8} | {'tokens/s':>9} | {'GB/s':>11} |")
    print(f"|{'-' * 10}|{'-' * 7}:|{'-' * 9}:|{'-' * 10}:|{'-' * 12}:|")
    rows = [("prefill", n, time_prefill(engine, n, args.repeats)) for n in map(int, args.prompt_tokens.split(","))]
    rows.append(("decode", *time_decode(engine, args.decode_tokens)))
    vram_gb = engine.vram_bytes_used / 1e9 if engine.resident else None
    cache_gb, cache_positions = engine.cache.nbytes / 1e9, engine.kv_cache_positions
    engine.close()
    if args.llama_cpp:
        tokens, seconds, where = time_llama_cpp_decode(engine.gguf.path, args.decode_tokens)
        rows.append((f"llama.cpp decode ({where})", tokens, seconds))
    for phase, tokens, seconds in rows:
        rate = tokens / seconds
        bandwidth = f"{rate * streamed_gb:.1f}" if phase == "decode" else "-"
        print(f"| {phase:<8} | {tokens:>6} | {seconds:>8.3f} | {rate:>9.1f} | {bandwidth:>11} |")
    if vram_gb is not None:
        print(f"VRAM held by the engine after decode: {vram_gb:.2f} GB, of which the KV cache allocated at "
              f"load ({cache_positions} positions) {cache_gb:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
