"""Benchmark of the CUDA backend: prints markdown tables, asserts nothing.

    python -m reference_worker.cuda.bench --model PATH [--llama-bench PATH/TO/llama-bench]
        [--llama-server PATH/TO/llama-server] [--json OUT.json] [--kernels]
    python -m reference_worker.cuda.bench --kernels      # per-kernel GPU time, real shapes, random data
    python -m reference_worker.cuda.bench --model PATH --pdl-ab [--runs 5]   # PDL on against off

Model table: load time, VRAM used, time to first token (short and 512-token prompts), decode
tokens/s at batch 1 over 256 tokens (CUDA graph replay; and eager, for contrast), and the
bandwidth that decode rate implies (weight bytes read per token x tokens/s, as gpt-fast
reports it), what recording the graphs costs, and per prefill graph (cuda/decode.py) the first
token op by op and as the graph. With --llama-bench, llama.cpp's tg128/pp512 on the same file and the ratios.
Then, with --model, the table of issue 13 (`issue_table`): the same in-process figures,
filtered sampling per token, and over HTTP this worker and (with --llama-server) llama-server,
each started from its command on the same file (http_bench.py); --json writes that table and
every figure behind it.
With --pdl-ab, instead of those tables: decode tokens/s and the first token with programmatic
dependent launch (kernels.use_programmatic_launch, the switch M0_CUDA_PDL sets) on and off, in
one process, the two alternating run by run, every graph recorded anew at each switch.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from reference_worker import http_bench
from reference_worker.bench import PROMPT, time_decode, weight_bytes
from reference_worker.engine import Engine, SamplingParams

GREEDY = SamplingParams(temperature=0.0)


def _decode_rate(engine: Engine, prompt_ids: list[int], n_tokens: int) -> tuple[float, float, float, list[int]]:
    """(seconds to the first token, seconds of the second token (the graph is recorded there, on
    the first call), decode tokens/s after that, ids) with the GPU decoder and the engine's KV
    cache; greedy."""
    decoder = engine.ops.decoder(engine.adapter)
    t0 = time.perf_counter()
    ids = [decoder.start(prompt_ids, GREEDY, 0, engine.cache)]
    t1 = time.perf_counter()
    ids.append(decoder.next())  # records the graph the first time: one cache, one graph
    t2 = time.perf_counter()
    for _ in range(n_tokens):
        ids.append(decoder.next())
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, n_tokens / (t3 - t2), ids


def _time_start(decoder, prompt_ids: list[int], cache) -> float:
    started = time.perf_counter()
    decoder.start(prompt_ids, GREEDY, 0, cache)
    return time.perf_counter() - started


def _prefill_graph_rows(engine: Engine, ids: list[int]) -> list[tuple[str, str]]:
    """Rows: what recording every graph for a new KV cache costs (the decode step's and each
    prefill bucket's: lazily on main, or once at startup with a cache that lives as long as the
    worker), then for each graph the first token of a prompt that fills it, op by op and as the
    graph (medians of 5)."""
    decoder = engine.ops.decoder(engine.adapter)
    buckets = decoder.prefill_buckets
    cache = engine.adapter.new_cache(max(buckets) + 1)
    try:
        started = time.perf_counter()
        decoder.record_graphs(cache)
        rows = [(f"recording every graph (decode step, prefill buckets {', '.join(map(str, buckets))})",
                 f"{(time.perf_counter() - started) * 1e3:.0f} ms")]
        for n in (1, *buckets):
            prompt = ids[:n]
            graph = statistics.median(_time_start(decoder, prompt, cache) for _ in range(5))
            decoder.prefill_buckets = ()
            try:
                eager = statistics.median(_time_start(decoder, prompt, cache) for _ in range(5))
            finally:
                decoder.prefill_buckets = buckets
            rows.append((f"first token, {n}-token prompt: op by op / one graph", f"{eager * 1e3:.2f} / {graph * 1e3:.2f} ms"))
    finally:
        cache.close()
    return rows


def _eager_rate(engine: Engine, prompt_ids: list[int], n_tokens: int) -> float:
    """Decode tokens/s with one adapter.forward per token, launched op by op, logits copied to
    the host and argmax there: what the graph and the GPU sampler save."""
    token = int(np.argmax(engine.adapter.forward(prompt_ids, 0, engine.cache)))
    t0 = time.perf_counter()
    for i in range(n_tokens):
        token = int(np.argmax(engine.adapter.forward([token], len(prompt_ids) + i, engine.cache)))
    return n_tokens / (time.perf_counter() - t0)


def _llama_bench(binary: str, model: str) -> dict[str, float]:
    out = subprocess.run([binary, "-m", model, "-p", "512", "-n", "128", "-fa", "0,1", "-o", "json"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    rates = {}
    for row in json.loads(out):
        test = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        rates[f"{test} fa={int(bool(row.get('flash_attn')))}"] = row["avg_ts"]
    return rates


def kv_cache_row(engine: Engine) -> str:
    """The startup KV cache: positions, bytes, per-layer capacities (sliding-window rings), and
    weights + cache against M0-W-1823's 16 GB +-20% for a GPT-OSS-20B-sized model."""
    cache, weights = engine.cache, engine.ops.arena.nbytes
    rings = sorted({c for c in cache.capacities if c < cache.n_ctx})
    layers = f"{len(cache.capacities) - sum(c < cache.n_ctx for c in cache.capacities)} full layers"
    layers += f", {sum(c < cache.n_ctx for c in cache.capacities)} rings of {rings}" if rings else ""
    return (f"{cache.n_ctx} positions, {cache.nbytes / 1e9:.3f} GB ({layers}); weights {weights / 1e9:.2f} GB "
            f"+ cache = {(weights + cache.nbytes) / 1e9:.2f} GB (GPT-OSS-20B's envelope: 12.8-19.2 GB)")


LONG_SENTENCE = "The quick brown fox jumps over the lazy dog. "
HTTP_LONG_PROMPT_TOKENS = 500


def _long_prompt(engine: Engine, n_tokens: int = 512) -> list[int]:
    filler = engine.tokenize(LONG_SENTENCE * 120)
    return (filler * (n_tokens // len(filler) + 1))[:n_tokens]


def bench_model(path: str, n_tokens: int, llama_bench: str | None) -> dict:
    """Prints the model table; returns the figures the issue table needs (see issue_table)."""
    t0 = time.perf_counter()
    engine = Engine.load(path, backend="cuda")
    load_s = time.perf_counter() - t0
    short = engine.tokenize(PROMPT)
    long = _long_prompt(engine)
    record_s = _decode_rate(engine, short, 8)[1]  # first use of every kernel; records the graph
    ttft_short, ttft_long = (statistics.median(_decode_rate(engine, ids, 1)[0] for _ in range(5))
                             for ids in (short, long))
    rates = [_decode_rate(engine, short, n_tokens)[2] for _ in range(3)]
    decode = statistics.median(rates)
    eager = _eager_rate(engine, short, 32)
    served_tokens, served_s = time_decode(engine, n_tokens)
    step_bytes = weight_bytes(engine)
    rows = [
        ("load time", f"{load_s:.2f} s"),
        ("VRAM used (weights + KV + scratch)", f"{engine.vram_bytes_used / 2**20:.1f} MiB "
         f"({engine.vram_bytes_used / 1e9:.2f} GB)"),
        ("KV cache allocated at load", kv_cache_row(engine)),
        (f"time to first token, {len(short)}-token prompt (median of 5)", f"{ttft_short * 1e3:.2f} ms"),
        (f"time to first token, {len(long)}-token prompt (median of 5)", f"{ttft_long * 1e3:.2f} ms"),
        (f"decode, batch 1, {n_tokens} tokens (graph; median of 3)", f"{decode:.1f} tokens/s  (runs: "
         + ", ".join(f"{r:.1f}" for r in rates) + ")"),
        ("second token, recording the decode graph (once: one KV cache)", f"{record_s * 1e3:.1f} ms"),
        (f"decode through Engine.generate ({n_tokens} tokens, or fewer at an end token)",
         f"{served_tokens / served_s:.1f} tokens/s"),
        ("decode, eager ops + host argmax, no graph (32 tokens)", f"{eager:.1f} tokens/s"),
        ("weights read per token / achieved bandwidth",
         f"{step_bytes / 2**20:.1f} MiB / {step_bytes * decode / 1e9:.0f} GB/s"),
    ]
    llama = _llama_bench(llama_bench, path) if llama_bench else {}
    for test, rate in llama.items():
        ours = decode if test.startswith("tg") else len(long) / ttft_long
        rows.append((f"llama.cpp {test}", f"{rate:.1f} tokens/s; this worker / llama.cpp = {ours / rate:.2f}"))
    rows += _prefill_graph_rows(engine, long)
    rows += _golden_rows(engine, short)
    print(f"\n| {engine.model_name} ({engine.quant_kind}) on {_device_name()} | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    sentence_tokens = len(engine.tokenize(LONG_SENTENCE * 10)) / 10
    figures = {
        "model": engine.model_name, "quant_kind": engine.quant_kind, "device": _device_name(),
        "short_prompt_tokens": len(short), "first_token_short_ms": ttft_short * 1e3,
        "prefill_tokens": len(long), "prefill_ms": ttft_long * 1e3, "decode_tps": decode,
        "decode_runs_tps": rates, "mib_per_token": step_bytes / 2**20, "bandwidth_gbs": step_bytes * decode / 1e9,
        "peak_bandwidth_gbs": _peak_bandwidth_gbs(), "llama_bench_tps": llama,
        "http_long_prompt": LONG_SENTENCE * round(HTTP_LONG_PROMPT_TOKENS / sentence_tokens),
    }
    engine.close()
    return figures


def bench_programmatic_launch(path: str, n_tokens: int, runs: int) -> dict:
    """Prints (and returns) decode tokens/s and the first token of a short and a 512-token prompt
    with programmatic dependent launch on and off: `runs` rounds, each one run with it and one
    without (every graph recorded anew after each switch, so its edges follow), medians; and
    whether greedy decoding gave the same ids both ways (M0-W-1826)."""
    from reference_worker.cuda import kernels

    engine = Engine.load(path, backend="cuda")
    decoder = engine.ops.decoder(engine.adapter)
    short, long = engine.tokenize(PROMPT), _long_prompt(engine)
    title = f"{engine.model_name} ({engine.quant_kind}) on {_device_name()}"
    figures: dict[str, dict[str, list]] = {"on": {}, "off": {}}
    try:
        if not kernels.use_programmatic_launch(True):
            print("\nprogrammatic dependent launch is not available here (it needs sm_90+ and cuLaunchKernelEx)")
            return {}
        for _ in range(runs):
            for mode in figures:
                kernels.use_programmatic_launch(mode == "on")
                decoder.record_graphs(engine.cache)
                _decode_rate(engine, short, 8)  # the first launches after the recording
                first_short, _, rate, ids = _decode_rate(engine, short, n_tokens)
                first_long = _decode_rate(engine, long, 1)[0]
                for key, value in (("decode_tps", rate), ("first_token_short_ms", first_short * 1e3),
                                   ("first_token_long_ms", first_long * 1e3), ("ids", ids)):
                    figures[mode].setdefault(key, []).append(value)
    finally:
        kernels.use_programmatic_launch()
        engine.close()
    on, off = ({key: statistics.median(values) for key, values in figures[mode].items() if key != "ids"}
               for mode in ("on", "off"))
    same_ids = all(ids == figures["on"]["ids"][0] for mode in figures for ids in figures[mode]["ids"])
    rows = [(f"decode, batch 1, {n_tokens} tokens (graph)", "tokens/s", "decode_tps", True),
            (f"first token, {len(short)}-token prompt", "ms", "first_token_short_ms", False),
            (f"first token, {len(long)}-token prompt", "ms", "first_token_long_ms", False)]
    print(f"\n| {title}: median of {runs} runs each, alternating | PDL on | PDL off "
          "| on / off speed |\n| --- | --- | --- | --- |")
    for what, unit, key, higher_is_faster in rows:
        speed = on[key] / off[key] if higher_is_faster else off[key] / on[key]
        print(f"| {what} ({unit}) | {on[key]:.2f} | {off[key]:.2f} | {speed:.3f} |")
    print(f"| greedy ids the same in every run, on and off | {same_ids} | | |")
    return {"on": on, "off": off, "runs": figures, "same_ids": same_ids}


# ../shared/DESIGN.md, "Test models": the real model's ids for PROMPT and the greedy
# continuation llama.cpp (CUDA) and HF transformers agree on, measured on an H100.
GOLDEN_PROMPT = [7985, 264, 6386, 38242, 911, 22670, 24231]
GOLDEN_CONTINUATION = [323, 1181, 5421, 389, 279, 4401, 315, 20443, 11229, 382, 49891, 45779, 374, 1075, 264,
                       45144, 11, 2303, 2132, 594]


def _golden_rows(engine: Engine, prompt: list[int]) -> list[tuple[str, str]]:
    """On the real model (its 151936-token vocabulary): free-running greedy ids against the
    golden, and teacher-forced top-1 over the golden sequence."""
    if engine.vocab_size != 151936:
        return [("golden check", "skipped: not the real test model")]
    free = _decode_rate(engine, GOLDEN_PROMPT, len(GOLDEN_CONTINUATION) - 2)[3]
    same = next((i for i, (a, b) in enumerate(zip(free, GOLDEN_CONTINUATION)) if a != b), len(free))
    logits = engine.score(GOLDEN_PROMPT + GOLDEN_CONTINUATION)[len(GOLDEN_PROMPT) - 1:-1]
    top = np.sort(logits, axis=1)
    margins = top[:, -1] - top[:, -2]
    forced = logits.argmax(1) == np.array(GOLDEN_CONTINUATION)
    misses = [f"pos {i} (margin {margins[i]:.2f})" for i in np.flatnonzero(~forced)]
    return [("tokenizer gives the golden prompt ids", str(prompt == GOLDEN_PROMPT)),
            ("greedy ids, free running", f"{free}; first {same} of {len(free)} equal the golden"),
            ("teacher-forced top-1 = golden", f"{int(forced.sum())} of {len(forced)}"
             + (f"; differs at {', '.join(misses)}" if misses else ""))]


def _device_name() -> str:
    import cupy as cp

    return cp.cuda.runtime.getDeviceProperties(0)["name"].decode()


def _peak_bandwidth_gbs() -> float | None:
    """The device's memory bandwidth from its clock and bus width (double data rate); None
    where the runtime does not say (CUDA 13 dropped them from cudaDeviceProp)."""
    import cupy as cp

    attributes = cp.cuda.Device().attributes
    clock_khz, bus_bits = attributes.get("MemoryClockRate"), attributes.get("GlobalMemoryBusWidth")
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9 if clock_khz and bus_bits else None


def _graph_time_us(launch, reps: int = 50) -> float:
    """GPU time of one launch: `reps` launches recorded in a CUDA graph, replayed and timed with
    events, so Python's launch overhead stays out of the figure."""
    import cupy as cp

    launch()
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        for _ in range(reps):
            launch()
        graph = stream.end_capture()
        graph.launch(stream)
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(stream)
        for _ in range(5):
            graph.launch(stream)
        end.record(stream)
        end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) * 1e3 / (5 * reps)


# Sampler cases of the kernel table: (what, logits' standard deviation, SamplingParams). LLM logits
# are peaked; the flat case shows the exact search that a top-p set past 2048 tokens falls back to.
FILTERED_SAMPLING = "top-k 40, top-p 0.9, min-p 0.05, T 0.8, repetition penalty 1.1 over 256 ids"
SAMPLER_CASES = [
    ("greedy", 3.0, SamplingParams(temperature=0.0)),
    ("temperature 0.8 alone (a draw over the whole vocabulary)", 3.0, SamplingParams(temperature=0.8)),
    (FILTERED_SAMPLING, 3.0, SamplingParams(temperature=0.8, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.1)),
    ("top-p 0.9 alone, peaked logits (~760 kept)", 4.0, SamplingParams(temperature=1.0, top_p=0.9)),
    ("top-p 0.9 alone, flat logits (~93,000 kept: the exact search)", 1.0, SamplingParams(temperature=1.0, top_p=0.9)),
]


def sampler_times_us(n_vocab: int = 151936) -> list[tuple[str, float]]:
    """GPU time per token of the repetition penalty and the sampler for each SAMPLER_CASES row,
    over n_vocab random logits (the real model's vocabulary by default)."""
    import cupy as cp

    from reference_worker.cuda import kernels

    rng = np.random.default_rng(0)
    history = cp.asarray(rng.integers(0, n_vocab, 256), np.int32)
    mask, scratch = cp.zeros(n_vocab, np.int32), kernels.sample_scratch()
    times = []
    for what, scale, p in SAMPLER_CASES:
        logits = cp.asarray((rng.standard_normal(n_vocab) * scale).astype(np.float32))
        fparams = cp.asarray([p.temperature, p.top_p, p.min_p, p.repetition_penalty], np.float32)
        iparams = cp.asarray([p.top_k, 1, 0], np.uint32)
        state = cp.asarray([5, 0, history.size if p.repetition_penalty != 1.0 else 0], np.int32)

        def draw():
            kernels.repetition_penalty(logits, history, state[2:3], mask, fparams)
            kernels.sample(logits, fparams, iparams, state, scratch)

        times.append((what, _graph_time_us(draw, reps=10)))
    return times


MOE_TOKENS = (1, 4, 8, 16, 256)  # decode, short prompts (where the paths cross), the engine's prefill chunk


def expert_ffn_times(weight, vec, rng: np.random.Generator) -> list[tuple[str, float, float]]:
    """GPU time and TFLOP/s of one layer's expert FFN at GPT-OSS-20B's dims (32 experts of width
    2880, 4 a token; random MXFP4 data, random routing) for MOE_TOKENS tokens, on each of
    kernels.moe_ffn's paths: per token, and grouped by expert on tensor cores or in fp32."""
    import functools

    import cupy as cp
    from gguf import GGMLQuantizationType as Q

    from reference_worker.cuda import kernels
    from reference_worker.synthetic import GPT_OSS_20B as DIMS

    n_expert, k, n_embd, n_ff = DIMS.n_expert, DIMS.n_expert_used, DIMS.n_embd, DIMS.n_ff_exp
    experts = kernels.DeviceExperts(n_expert, weight(Q.MXFP4, n_expert * n_ff, n_embd),
                                    weight(Q.MXFP4, n_expert * n_ff, n_embd), weight(Q.MXFP4, n_expert * n_embd, n_ff),
                                    vec(n_expert, n_ff), vec(n_expert, n_ff), vec(n_expert, n_embd))
    paths = {"per token": kernels.moe_ffn_per_token, "grouped, tensor cores": kernels.moe_ffn_grouped,
             "grouped, fp32": functools.partial(kernels.moe_ffn_grouped, tensor_cores=False)}
    rows = []
    for n_tok in MOE_TOKENS:
        x, residual, out = vec(n_tok, n_embd), vec(n_tok, n_embd), cp.empty((n_tok, n_embd), np.float32)
        ids = cp.asarray(np.argsort(rng.random((n_tok, n_expert)), axis=1)[:, :k].astype(np.int32))
        weights, act = cp.full((n_tok, k), 1.0 / k, np.float32), cp.empty((n_tok, k, n_ff), np.float32)
        flops = 2 * n_tok * k * 3 * n_embd * n_ff
        picked = "grouped, tensor cores" if kernels.moe_grouped(n_tok, k, n_expert) else "per token"
        for name, path in paths.items():
            us = _graph_time_us(lambda: path(experts, x, ids, weights, residual, act, out), reps=5)
            rows.append((f"expert FFN, GPT-OSS-20B dims (MXFP4), {n_tok} tokens, {name}"
                         + (" (moe_ffn's pick)" if name == picked else ""), us, flops / us / 1e6))
    return rows


def bench_kernels() -> None:
    """Per-kernel GPU time of one decode step of a Qwen2.5-0.5B-shaped model (random data), and
    GPT-OSS-20B's expert FFN on both paths (expert_ffn_times)."""
    import cupy as cp
    from gguf import GGMLQuantizationType as Q

    from reference_worker.cuda import kernels
    from reference_worker.cuda.kernels import DeviceWeight

    rng = np.random.default_rng(0)

    def weight(qtype, rows, cols):
        block, size = kernels.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, (rows, cols // block * size), dtype=np.uint8)
        raw[:, :] &= 0x3B  # keeps every fp16 scale field finite
        return DeviceWeight(qtype, rows, cols, cp.asarray(raw))

    def vec(*shape):
        return cp.asarray(rng.standard_normal(shape).astype(np.float32))

    rows = []
    for qtype, n_out, n_in, what in [(Q.Q5_0, 896, 896, "q / o proj"), (Q.Q5_0, 128, 896, "k / v proj"),
                                     (Q.Q5_0, 4864, 896, "gate / up proj"), (Q.Q4_K, 896, 4864, "down proj"),
                                     (Q.Q6_K, 896, 4864, "down proj"), (Q.Q8_0, 151936, 896, "output head")]:
        w, x, out = weight(qtype, n_out, n_in), vec(1, n_in), cp.empty((1, n_out), np.float32)
        us = _graph_time_us(lambda: kernels.matmul(w, x, out))
        rows.append((f"mat-vec {qtype.name} {n_out}x{n_in} ({what})", us, w.data.nbytes / us / 1e3))
        xs, outs = vec(256, n_in), cp.empty((256, n_out), np.float32)  # the engine's prefill chunk
        for prefill in (*kernels.PREFILL_KERNELS, None):
            us = _graph_time_us(lambda: kernels.matmul(w, xs, outs, prefill=prefill), reps=5)
            rows.append((f"prefill 256 tokens {qtype.name} {n_out}x{n_in}, {prefill or 'as the engine picks'}", us,
                         2 * 256 * n_out * n_in / us / 1e6))
    qkv, xs = [weight(Q.Q5_0, n, 896) for n in (896, 128, 128)], vec(256, 896)
    qkv_outs = [cp.empty((256, w.rows), np.float32) for w in qkv]
    for what, launch in (("three launches as kernels.matmul picks",
                          lambda: [kernels.matmul(w, xs, out) for w, out in zip(qkv, qkv_outs)]),
                         ("one launch (matmul_stacked, as the engine runs it)",
                          lambda: kernels.matmul_stacked(qkv, [None] * 3, xs, qkv_outs))):
        us = _graph_time_us(launch, reps=5)
        rows.append((f"prefill 256 tokens q/k/v Q5_0 (896+128+128)x896, {what}", us, 2 * 256 * 1152 * 896 / us / 1e6))
    gate, up, xs = weight(Q.Q5_0, 4864, 896), weight(Q.Q5_0, 4864, 896), vec(256, 896)
    g, u, o = (cp.empty((256, 4864), np.float32) for _ in range(3))
    for what, launch in (("three launches (the GEMMs as kernels.matmul picks, swiglu)",
                          lambda: kernels.swiglu(kernels.matmul(gate, xs, g), kernels.matmul(up, xs, u), o)),
                         ("one launch (matmul_gated, as the engine runs it)",
                          lambda: kernels.matmul_gated(gate, up, xs, o))):
        us = _graph_time_us(launch, reps=5)
        rows.append((f"prefill 256 tokens gate + up Q5_0 4864x896 + SwiGLU, {what}", us,
                     2 * 2 * 256 * 4864 * 896 / us / 1e6))
        xs, outs = vec(8, n_in), cp.empty((8, n_out), np.float32)  # a short prompt's graph (matmul_few)
        us = _graph_time_us(lambda: kernels.matmul(w, xs, outs))
        rows.append((f"prefill 8 tokens {qtype.name} {n_out}x{n_in}", us, 2 * 8 * n_out * n_in / us / 1e6))
    x, w896, out = vec(1, 896), vec(896), cp.empty((1, 896), np.float32)
    rows.append(("rmsnorm 896", _graph_time_us(lambda: kernels.rmsnorm(x, w896, 1e-6, out)), None))
    qkv = [weight(Q.Q5_0, n, 896) for n in (896, 128, 128)]
    qkv_out = [cp.empty((1, w.rows), np.float32) for w in qkv]
    rows.append(("rmsnorm + q/k/v Q5_0 (one launch)",
                 _graph_time_us(lambda: kernels.matvec_normed(qkv, [None] * 3, x, w896, 1e-6, qkv_out)), None))
    gate, up, ffn = weight(Q.Q5_0, 4864, 896), weight(Q.Q5_0, 4864, 896), cp.empty((1, 4864), np.float32)
    rows.append(("rmsnorm + gate/up Q5_0 + SwiGLU (one launch)",
                 _graph_time_us(lambda: kernels.matvec_gated(gate, up, x, w896, 1e-6, ffn)), None))
    pos = cp.asarray([300], np.int32)
    q, qo = vec(1, 14, 64), cp.empty((1, 14, 64), np.float32)
    rows.append(("rope 14 heads (prefill; decode rotates inside attention)",
                 _graph_time_us(lambda: kernels.rope(q, pos, 1e6, True, qo)), None))
    k, v = vec(1, 2, 64), vec(1, 2, 64)
    kc = cp.asarray(rng.standard_normal((2, 4096, 64)).astype(np.float16))
    vc, tickets = kc.copy(), kernels.attention_tickets()
    for ctx_used in (300, 2000):
        pos = cp.asarray([ctx_used], np.int32)
        rows.append((f"attention decode (RoPE and KV store included) at position {ctx_used}",
                     _graph_time_us(lambda: kernels.attention_decode(q, k, v, kc, vc, pos, 1e6, True, qo, tickets)),
                     None))
    # The second 256-token chunk of a 512-token prefill: queries at positions 256..511.
    pos, qs = cp.asarray([256], np.int32), vec(256, 14, 64)
    qso = cp.empty_like(qs)
    for tensor_cores, how in ((False, "a block per head and query"), (True, "tensor cores")):
        us = _graph_time_us(lambda: kernels.attention(qs, kc, vc, pos, qso, tensor_cores=tensor_cores), reps=5)
        rows.append((f"attention prefill, 256 queries at positions 256-511, {how}", us, None))
    q8, out8, pos0 = vec(8, 14, 64), cp.empty((8, 14, 64), np.float32), cp.zeros(1, np.int32)
    rows.append(("attention prefill, 8 queries at positions 0..7",
                 _graph_time_us(lambda: kernels.attention(q8, kc, vc, pos0, out8)), None))
    g, u, o = vec(1, 4864), vec(1, 4864), cp.empty((1, 4864), np.float32)
    rows.append(("swiglu 4864", _graph_time_us(lambda: kernels.swiglu(g, u, o)), None))
    rows += expert_ffn_times(weight, vec, rng)
    rows += [(f"sample: {what}", us, None) for what, us in sampler_times_us()]
    # The floor under every launch of a decode step: an empty kernel as a graph node.
    nothing = cp.RawKernel('extern "C" __global__ void nothing() {}', "nothing")
    rows.append(("empty kernel, one block of 128 threads (a graph node's own cost)",
                 _graph_time_us(lambda: nothing((1,), (128,), ()), reps=165), None))
    print(f"\n| kernel on {_device_name()} (random data, real shapes) | us | GB/s (mat-vec), TFLOP/s (prefill) |\n"
          "| --- | --- | --- |")
    for name, us, rate in rows:
        print(f"| {name} | {us:.2f} | {'' if rate is None else f'{rate:.3g}'} |")


def issue_table(figures: dict) -> list[dict]:
    """Issue 13's table from bench_model's figures plus `filtered_sampling_us` and `http`
    (http_bench.compare): one row per measure with this worker's value, llama.cpp's (a number,
    a dict by flash-attention setting, or None where not measured) and the speed ratio, > 1
    where this worker is faster (rates divided, times inverted)."""
    llama = figures.get("llama_bench_tps", {})
    http = figures.get("http", {})
    ours, server = http.get("worker", {}), http.get("llama_server", {})

    def by_fa(test: str) -> dict[str, float] | None:
        found = {f"fa {state}": llama[f"{test} fa={fa}"] for fa, state in ((0, "off"), (1, "on"))
                 if f"{test} fa={fa}" in llama}
        return found or None

    def ratio(worker, theirs, higher_is_faster: bool):
        if worker is None or not theirs:
            return None
        if isinstance(theirs, dict):
            return {k: ratio(worker, v, higher_is_faster) for k, v in theirs.items()}
        return worker / theirs if higher_is_faster else theirs / worker

    prefill_tps = figures["prefill_tokens"] / (figures["prefill_ms"] / 1e3)
    peak = figures["peak_bandwidth_gbs"]
    of_peak = f", {figures['bandwidth_gbs'] / peak:.0%} of {peak:.0f} GB/s" if peak else ""
    rows = [
        ("decode, batch 1", "tokens/s", figures["decode_tps"], by_fa("tg128"), True),
        (f"prefill, {figures['prefill_tokens']} tokens ({figures['prefill_ms']:.1f} ms)", "tokens/s", prefill_tps,
         by_fa("pp512"), True),
        (f"first token, {figures['short_prompt_tokens']}-token prompt, in process", "ms",
         figures["first_token_short_ms"], None, False),
        ("over HTTP: first token, short prompt", "ms", ours.get("first_token_short_ms"),
         server.get("first_token_short_ms"), False),
        (f"over HTTP: first token, ~{HTTP_LONG_PROMPT_TOKENS}-token prompt", "ms", ours.get("first_token_long_ms"),
         server.get("first_token_long_ms"), False),
        ("over HTTP: decode", "tokens/s", ours.get("decode_tps"), server.get("decode_tps"), True),
        (f"sampling: {FILTERED_SAMPLING}", "us per token", figures.get("filtered_sampling_us"), None, False),
        (f"bandwidth in decode ({figures['mib_per_token']:.0f} MiB a token{of_peak})", "GB/s",
         figures["bandwidth_gbs"], None, True),
    ]
    return [{"measure": measure, "unit": unit, "worker": worker, "llama_cpp": theirs,
             "ratio": ratio(worker, theirs, faster)} for measure, unit, worker, theirs, faster in rows]


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return " / ".join(f"{_cell(v)} ({k})" for k, v in value.items())
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def issue_markdown(rows: list[dict], title: str) -> str:
    lines = [f"| {title} | this worker | llama.cpp | speed ratio (> 1: this worker faster) |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {r['measure']} ({r['unit']}) | {_cell(r['worker'])} | {_cell(r['llama_cpp'])} | {_cell(r['ratio'])} |"
              for r in rows]
    return "\n".join(lines)


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def bench_speed(args: argparse.Namespace) -> None:
    """The model table, the issue table over it and the HTTP comparison; JSON with --json."""
    figures = bench_model(args.model, args.tokens, args.llama_bench)
    long_prompt = figures.pop("http_long_prompt")
    figures["filtered_sampling_us"] = dict(sampler_times_us())[FILTERED_SAMPLING]
    figures["http"] = http_bench.compare(args.model, PROMPT, long_prompt, args.tokens, args.http_runs,
                                         args.llama_server, tuple(shlex.split(args.llama_server_args)))
    rows = issue_table(figures)
    print("\n" + issue_markdown(rows, f"{figures['model']} ({figures['quant_kind']}) on {figures['device']}"))
    if args.json:
        record = {"command": sys.argv, "commit": _commit(), "figures": figures, "table": rows}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_worker.cuda.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="GGUF file to benchmark")
    parser.add_argument("--tokens", type=int, default=256, help="decode tokens per run")
    parser.add_argument("--llama-bench", help="path of a llama-bench binary to compare with")
    parser.add_argument("--llama-server", help="path of a llama-server binary to compare with over HTTP")
    parser.add_argument("--llama-server-args", default=shlex.join(http_bench.LLAMA_SERVER_ARGS),
                        help="llama-server's arguments beside -m, --host and --port (default: %(default)s)")
    parser.add_argument("--http-runs", type=int, default=3, help="streams per prompt and server (medians)")
    parser.add_argument("--json", help="also write the issue table and every figure behind it here")
    parser.add_argument("--kernels", action="store_true",
                        help="also time each kernel of a decode step (real shapes, random data)")
    parser.add_argument("--pdl-ab", action="store_true",
                        help="with --model: only decode and first token with programmatic dependent launch on and "
                             "off (M0_CUDA_PDL), alternating, instead of the model and issue tables")
    parser.add_argument("--runs", type=int, default=5, help="runs each way with --pdl-ab (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.model and not args.kernels:
        parser.error("give --model PATH, --kernels, or both")
    if args.pdl_ab and not args.model:
        parser.error("--pdl-ab needs --model PATH")
    if args.kernels:
        bench_kernels()
    if args.model and args.pdl_ab:
        figures = bench_programmatic_launch(args.model, args.tokens, args.runs)
        if args.json:
            Path(args.json).write_text(json.dumps({"command": sys.argv, "commit": _commit(), "pdl_ab": figures},
                                                  indent=2) + "\n")
    elif args.model:
        bench_speed(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
