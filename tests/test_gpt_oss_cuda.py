"""The gpt-oss adapter on the CUDA backend: moe.cu's router and expert kernels, the sinks, window
and YaRN of attention.cu / layers.cu against their NumPy twins, and test_cuda_engine.py's checks
on synthetic gpt-oss models (against the NumPy engine, through prefill and the decode step
captured as a CUDA graph; VRAM loading, accounting and limits). Tolerances as in
test_cuda_kernels.py."""
from __future__ import annotations

import functools

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_worker import ops_numpy, synthetic
from reference_worker.cuda import cuda_unavailable_reason
from reference_worker.gguf_file import GGUFFile
from reference_worker.ops_numpy import YaRN

pytestmark = pytest.mark.cuda
if (REASON := cuda_unavailable_reason()) is not None:
    pytest.skip(f"CUDA backend unavailable: {REASON}", allow_module_level=True)

import cupy as cp  # noqa: E402
# test_cuda_engine.py's tests hold for any architecture: imported here, pytest runs them again
# with this module's `model_path`, synthetic gpt-oss files.
from test_cuda_engine import (  # noqa: E402, F401
    PROMPT, engines, test_a_model_too_large_for_the_budget_is_refused_with_the_numbers,
    test_chunk_size_does_not_change_what_is_loaded, test_graph_decoding_follows_the_model_greedily,
    test_a_request_over_the_cache_positions_is_vram_oom_and_the_next_one_works,
    test_seeded_sampling_repeats_and_seeds_differ, test_startup_reserves_the_kv_cache_beside_the_weights,
    test_the_decode_graph_is_recorded_once_for_every_request, test_the_kv_cache_is_allocated_at_load_counted_and_resident,
    test_temperature_zero_gives_identical_ids_run_after_run,
    test_vram_exhausted_by_a_request_is_vram_oom_and_the_worker_goes_on, test_vram_returns_to_its_baseline_after_100_requests,
    test_weights_stay_in_their_encoding_at_aligned_offsets,
)
from test_cuda_kernels import GPU_SETTINGS, rel_err, twin_prefill_attention  # noqa: E402
from test_moe_kernels_on_cpu import ROUTINGS, moe_inputs, random_experts, twin_moe  # noqa: E402
from test_gpt_oss import RING_RUNS, ring_and_full_logits  # noqa: E402

from reference_worker.cuda import kernels  # noqa: E402
from reference_worker.cuda.kernels import DeviceExperts, DeviceWeight  # noqa: E402

YARN = YaRN(factor=32.0, n_ctx_orig=4096)


@pytest.fixture(scope="module", params=[("small", 0), ("wide", 1)])
def model_path(request, tmp_path_factory):
    name, seed = request.param
    dims = synthetic.GptOssDims() if name == "small" else synthetic.GptOssDims(
        n_layer=2, n_embd=256, n_expert=8, n_expert_used=4, sliding_window=16)
    return synthetic.build_gpt_oss(tmp_path_factory.mktemp("gpt-oss") / f"{name}.gguf", seed, dims)


@settings(max_examples=30, deadline=None)
@given(n_tok=st.integers(1, 70), n_expert=st.sampled_from([4, 32, 128]), k=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_topk_router_matches_twin(n_tok, n_expert, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_tok, 64)).astype(np.float32)
    w, b = rng.standard_normal((n_expert, 64)).astype(np.float32), rng.standard_normal(n_expert).astype(np.float32)
    want_ids, want_weights = ops_numpy.route(x, w, b, k)
    logits = cp.asarray(ops_numpy.matmul(x, w, bias=b))
    ids, weights = kernels.moe_topk(logits, k, cp.full((n_tok, k), -1, np.int32), cp.full((n_tok, k), np.nan, np.float32))
    assert np.array_equal(ids.get(), want_ids)
    np.testing.assert_allclose(weights.get(), want_weights, rtol=1e-5, atol=1e-6)


def device_copy(twin: ops_numpy.Experts) -> DeviceExperts:
    """The twin's experts on the device: the stacks in their encoding, the biases as float32."""
    stacks = [stack.tensor for stack in (twin.gate, twin.up, twin.down)]
    weights = [DeviceWeight(t.qtype, t.raw.shape[0], t.shape[-1], cp.asarray(np.ascontiguousarray(t.raw)))
               for t in stacks]
    biases = (cp.asarray(b, np.float32) for b in (twin.gate_bias, twin.up_bias, twin.down_bias))
    return DeviceExperts(stacks[0].shape[0], *weights, *biases)


def model_experts(model_path) -> tuple[ops_numpy.Experts, DeviceExperts]:
    """Layer 0's experts of a synthetic gpt-oss file: the twin's and the device's."""
    model = GGUFFile.open(model_path)
    tensors = [model.tensors[f"blk.0.ffn_{p}_exps.{w}"] for w in ("weight", "bias") for p in ("gate", "up", "down")]
    assert tensors[0].qtype == Q.MXFP4
    twin = ops_numpy.load_experts(*tensors)
    return twin, device_copy(twin)


# kernels.moe_ffn's paths: per (token, slot) pair, and grouped by expert on tensor cores or in fp32.
PATHS = {"per-token": kernels.moe_ffn_per_token,
         "grouped-mma": functools.partial(kernels.moe_ffn_grouped, tensor_cores=True),
         "grouped-tiled": functools.partial(kernels.moe_ffn_grouped, tensor_cores=False)}
GROUPED = ["grouped-mma", "grouped-tiled"]


def run_moe(path, experts: DeviceExperts, x, ids, weights, residual) -> np.ndarray:
    n_tok, k = ids.shape
    return path(experts, cp.asarray(x), cp.asarray(ids), cp.asarray(weights), cp.asarray(residual),
                cp.full((n_tok, k, experts.n_ff), np.nan, np.float32), cp.full(x.shape, np.nan, np.float32)).get()


def inputs_for(experts: DeviceExperts, seed: int, n_tok: int, how: str = "random"):
    return moe_inputs(np.random.default_rng(seed), n_tok, experts.n_embd, experts.n_expert, min(4, experts.n_expert),
                      how)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n_tok", [1, 3, 40])
def test_expert_ffn_reads_the_routed_experts_as_the_twin(model_path, path, n_tok):
    twin, experts = model_experts(model_path)
    x, ids, weights, residual = inputs_for(experts, n_tok, n_tok)
    got = run_moe(PATHS[path], experts, x, ids, weights, residual)
    assert rel_err(got, twin_moe(twin, x, ids, weights, residual)) < 1e-5


@pytest.mark.parametrize("path", GROUPED)
@GPU_SETTINGS
@given(n_tok=st.integers(1, 600), how=st.sampled_from(ROUTINGS), seed=st.integers(0, 2**32 - 1))
def test_grouped_expert_ffn_matches_the_twin_and_the_per_token_path(model_path, path, n_tok, how, seed):
    """Tokens grouped by expert (tiles of 32 pairs, partial tiles, idle experts, one expert with
    every token) give the twin's result, and the per-token kernels' to their tolerance."""
    twin, experts = model_experts(model_path)
    x, ids, weights, residual = inputs_for(experts, seed, n_tok, how)
    got = run_moe(PATHS[path], experts, x, ids, weights, residual)
    assert rel_err(got, twin_moe(twin, x, ids, weights, residual)) < 1e-5
    assert rel_err(got, run_moe(kernels.moe_ffn_per_token, experts, x, ids, weights, residual)) < 1e-5


@pytest.mark.parametrize("path", GROUPED)
def test_grouped_expert_ffn_repeats_bit_for_bit(model_path, path):
    """No float atomics: the order of every sum is fixed (M0-W-1826)."""
    _, experts = model_experts(model_path)
    inputs = inputs_for(experts, 7, 300)
    first = run_moe(PATHS[path], experts, *inputs)
    assert all(np.array_equal(run_moe(PATHS[path], experts, *inputs), first) for _ in range(3))


def test_moe_ffn_takes_the_per_token_path_in_decode_and_the_grouped_one_in_prefill(model_path):
    _, experts = model_experts(model_path)
    for n_tok, path in ((1, "per-token"), (256, "grouped-mma")):
        inputs = inputs_for(experts, n_tok, n_tok)
        assert np.array_equal(run_moe(kernels.moe_ffn, experts, *inputs), run_moe(PATHS[path], experts, *inputs))


@pytest.mark.parametrize("path", GROUPED)
@pytest.mark.parametrize("qtype", list(kernels.WEIGHT_KERNELS), ids=lambda q: q.name)
@pytest.mark.parametrize("n_tok", [5, 77])
def test_grouped_expert_ffn_of_every_weight_type_matches_the_twin(path, qtype, n_tok):
    twin = random_experts(qtype, 5, 256, 256, seed=n_tok)  # 256: the K-quants' super-block
    experts = device_copy(twin)
    x, ids, weights, residual = moe_inputs(np.random.default_rng(n_tok), n_tok, 256, 5, 2)
    got = run_moe(PATHS[path], experts, x, ids, weights, residual)
    assert rel_err(got, twin_moe(twin, x, ids, weights, residual)) < 1e-5


def test_rope_with_the_yarn_table_matches_twin():
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((9, 4, 64)).astype(np.float32), rng.standard_normal((9, 2, 64)).astype(np.float32)
    freqs, magnitude = YARN.frequencies(150000.0, 64)
    start = 4090
    got_q, got_k = kernels.rope(cp.asarray(q), cp.asarray([start], np.int32), 150000.0, True, cp.empty_like(cp.asarray(q)),
                                cp.asarray(k), cp.empty_like(cp.asarray(k)), cp.asarray(freqs.astype(np.float32)),
                                magnitude)
    want_q, want_k = ops_numpy.rope(q, k, np.arange(start, start + 9), 150000.0, True, YARN)
    assert rel_err(got_q.get(), want_q) < 1e-4 and rel_err(got_k.get(), want_k) < 1e-4


@GPU_SETTINGS
@given(start=st.integers(0, 300), n=st.integers(1, 40), window=st.sampled_from([0, 1, 8, 128]),
       with_sinks=st.booleans(), seed=st.integers(0, 1000))
def test_prefill_attention_with_sinks_and_window_matches_twin(start, n, window, with_sinks, seed):
    rng = np.random.default_rng(seed)
    n_kv, group, head_dim = 2, 4, 64
    q = rng.standard_normal((n, n_kv * group, head_dim)).astype(np.float32)
    k_all = rng.standard_normal((start + n, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    v_all = rng.standard_normal((start + n, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    sinks = (rng.standard_normal(n_kv * group) * 3).astype(np.float32) if with_sinks else None
    want = twin_prefill_attention(q, k_all, v_all, start, sinks, window)

    k_cache, v_cache = (cp.asarray(np.pad(a, ((0, 5), (0, 0), (0, 0))).transpose(1, 0, 2).astype(np.float16))
                        for a in (k_all, v_all))
    out = kernels.attention(cp.asarray(q), cp.ascontiguousarray(k_cache), cp.ascontiguousarray(v_cache),
                            cp.asarray([start], np.int32), cp.full(q.shape, np.nan, np.float32),
                            None if sinks is None else cp.asarray(sinks), window, tensor_cores=False)
    assert rel_err(out.get().reshape(n, -1), want) < 1e-5


@GPU_SETTINGS
@given(start=st.integers(0, 700), window=st.sampled_from([0, 1, 8, 128]), with_sinks=st.booleans(),
       seed=st.integers(0, 1000))
def test_decode_attention_with_sinks_window_and_yarn_matches_twin(start, window, with_sinks, seed):
    rng = np.random.default_rng(seed)
    n_kv, group, head_dim = 2, 4, 64
    ctx = start + 1 + int(rng.integers(0, 200))
    q = rng.standard_normal((1, n_kv * group, head_dim)).astype(np.float32)
    k_all = rng.standard_normal((start + 1, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    v_all = rng.standard_normal((start + 1, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    sinks = (rng.standard_normal(n_kv * group) * 3).astype(np.float32) if with_sinks else None
    twin_cache = ops_numpy.KVCache(ctx, (ctx,), n_kv, head_dim)
    if start:
        ops_numpy.attention(q.repeat(start, 0), k_all[:start], v_all[:start], twin_cache, 0, 0)
    rotated_q, rotated_k = ops_numpy.rope(q, k_all[start:], np.array([start]), 150000.0, True, YARN)
    stored_k = rotated_k.astype(np.float16).astype(np.float32)
    want = ops_numpy.attention(rotated_q, stored_k, v_all[start:], twin_cache, 0, start, sinks, window)

    k_cache = cp.full((n_kv, ctx, head_dim), np.nan, np.float16)  # positions outside the window: never read
    v_cache = cp.full((n_kv, ctx, head_dim), np.nan, np.float16)
    first = max(0, start - window + 1) if window else 0
    if start > first:
        kernels.kv_store(cp.asarray(k_all[first:start]), cp.asarray(v_all[first:start]), k_cache, v_cache,
                         cp.asarray([first], np.int32))
    freqs, magnitude = YARN.frequencies(150000.0, head_dim)
    out = kernels.attention_decode(cp.asarray(q), cp.asarray(k_all[start:]), cp.asarray(v_all[start:]), k_cache,
                                   v_cache, cp.asarray([start], np.int32), 150000.0, True,
                                   cp.full(q.shape, np.nan, np.float32), kernels.attention_tickets(),
                                   None if sinks is None else cp.asarray(sinks), window,
                                   cp.asarray(freqs.astype(np.float32)), magnitude)
    assert rel_err(out.get().reshape(1, -1), want) < 1e-3  # fp16 rounding of the rotated key, as there


def ring_cache(n_kv: int, capacity: int, head_dim: int) -> tuple[cp.ndarray, cp.ndarray]:
    """A sliding-window layer's K and V ring, NaN where nothing was stored (never to be read)."""
    return tuple(cp.full((n_kv, capacity, head_dim), np.nan, np.float16) for _ in "kv")


@GPU_SETTINGS
@given(start=st.integers(0, 600), n=st.integers(1, 40), window=st.sampled_from([1, 8, 128]),
       with_sinks=st.booleans(), seed=st.integers(0, 1000), tensor_cores=st.booleans())
def test_prefill_attention_over_a_ring_matches_the_twins_full_cache(start, n, window, with_sinks, seed, tensor_cores):
    """A window layer's cache of window + 40 slots (40: this test's chunk), position p at slot
    p % capacity: kv_store wraps, attention reads the window through the ring (both kernels: from
    16 queries the tensor-core one, whose fp16 q and P are held to test_cuda_kernels' 2e-3)."""
    rng = np.random.default_rng(seed)
    n_kv, group, head_dim, capacity = 2, 4, 64, window + 40
    q = rng.standard_normal((n, n_kv * group, head_dim)).astype(np.float32)
    k_all = rng.standard_normal((start + n, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    v_all = rng.standard_normal((start + n, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    sinks = (rng.standard_normal(n_kv * group) * 3).astype(np.float32) if with_sinks else None
    twin_cache = ops_numpy.KVCache(start + n, (start + n,), n_kv, head_dim)
    if start:
        ops_numpy.attention(q[:1].repeat(start, 0), k_all[:start], v_all[:start], twin_cache, 0, 0)
    want = ops_numpy.attention(q, k_all[start:], v_all[start:], twin_cache, 0, start, sinks, window)

    k_cache, v_cache = ring_cache(n_kv, capacity, head_dim)
    first = max(0, start - window + 1)  # the oldest position the chunk's first query reads
    if start > first:
        kernels.kv_store(cp.asarray(k_all[first:start]), cp.asarray(v_all[first:start]), k_cache, v_cache,
                         cp.asarray([first], np.int32))
    pos0 = cp.asarray([start], np.int32)
    kernels.kv_store(cp.asarray(k_all[start:]), cp.asarray(v_all[start:]), k_cache, v_cache, pos0)
    slots = np.arange(start, start + n) % capacity
    assert np.array_equal(k_cache[:, slots].get().transpose(1, 0, 2), k_all[start:].astype(np.float16))
    out = kernels.attention(cp.asarray(q), k_cache, v_cache, pos0, cp.full(q.shape, np.nan, np.float32),
                            None if sinks is None else cp.asarray(sinks), window, tensor_cores=tensor_cores)
    fp16_inputs = tensor_cores and n >= kernels.FA_MIN_TOKENS
    assert rel_err(out.get().reshape(n, -1), want) < (2e-3 if fp16_inputs else 1e-5)


@GPU_SETTINGS
@given(start=st.integers(0, 900), window=st.sampled_from([0, 1, 8, 64, 128]), extra=st.integers(0, 300),
       blocks_per_head=st.sampled_from([1, 3, 128]), with_sinks=st.booleans(), seed=st.integers(0, 1000))
def test_decode_attention_over_a_ring_matches_the_twins_full_cache(start, window, extra, blocks_per_head, with_sinks,
                                                                   seed):
    """attention_decode on a ring of window + extra slots (window 0: a full layer of start + 1 +
    extra): it stores the new key at slot start % capacity and reads only the window's slots (the
    others are NaN); with fewer split blocks than chunks (ATTN_SPLIT_BLOCKS) a block takes several."""
    rng = np.random.default_rng(seed)
    n_kv, group, head_dim = 2, 4, 64
    capacity = window + extra if window else start + 1 + extra
    q = rng.standard_normal((1, n_kv * group, head_dim)).astype(np.float32)
    k_all = rng.standard_normal((start + 1, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    v_all = rng.standard_normal((start + 1, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    sinks = (rng.standard_normal(n_kv * group) * 3).astype(np.float32) if with_sinks else None
    twin_cache = ops_numpy.KVCache(start + 1, (start + 1,), n_kv, head_dim)
    if start:
        ops_numpy.attention(q.repeat(start, 0), k_all[:start], v_all[:start], twin_cache, 0, 0)
    rotated_q, rotated_k = ops_numpy.rope(q, k_all[start:], np.array([start]), 150000.0, True, YARN)
    stored_k = rotated_k.astype(np.float16).astype(np.float32)
    want = ops_numpy.attention(rotated_q, stored_k, v_all[start:], twin_cache, 0, start, sinks, window)

    k_cache, v_cache = ring_cache(n_kv, capacity, head_dim)
    first = max(0, start - window + 1) if window else 0
    if start > first:
        kernels.kv_store(cp.asarray(k_all[first:start]), cp.asarray(v_all[first:start]), k_cache, v_cache,
                         cp.asarray([first], np.int32))
    freqs, magnitude = YARN.frequencies(150000.0, head_dim)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "ATTN_SPLIT_BLOCKS", blocks_per_head * n_kv * group)
        out = kernels.attention_decode(cp.asarray(q), cp.asarray(k_all[start:]), cp.asarray(v_all[start:]), k_cache,
                                       v_cache, cp.asarray([start], np.int32), 150000.0, True,
                                       cp.full(q.shape, np.nan, np.float32), kernels.attention_tickets(),
                                       None if sinks is None else cp.asarray(sinks), window,
                                       cp.asarray(freqs.astype(np.float32)), magnitude)
    assert rel_err(out.get().reshape(1, -1), want) < 1e-3  # fp16 rounding of the rotated key, as above
    stored = v_cache[:, start % capacity].get()
    assert np.array_equal(stored, v_all[start].astype(np.float16))  # the new value went to its slot


@pytest.mark.parametrize("chunk, prompt_len, n", RING_RUNS)
def test_the_window_layers_ring_gives_the_logits_of_the_full_cache_on_cuda(engines, monkeypatch, chunk, prompt_len,
                                                                             n):
    cuda, host = engines
    if n > cuda.context_length:
        pytest.skip(f"{n} positions pass this model's context of {cuda.context_length}")
    ring, full = ring_and_full_logits(cuda.adapter, chunk, prompt_len, n, monkeypatch)
    assert rel_err(ring, full) < 1e-5  # the same fp16 keys, read from other slots
    host_ring = ring_and_full_logits(host.adapter, chunk, prompt_len, n, monkeypatch)[0]
    err = np.linalg.norm(ring - host_ring, axis=1) / np.linalg.norm(host_ring, axis=1)
    assert np.quantile(err, 0.95) < 2e-2  # and the twin's ring, within the fp16 cache's error


def test_teacher_forced_logits_agree_with_the_numpy_engine(engines):
    """As test_cuda_engine's, but a router near-tie may pick another expert under the fp16 KV
    cache and move one position's logits by more than rounding: 95% of the rows must agree to
    2e-2, and the top-1 at 99% of the clear positions (at least 40 of them)."""
    cuda, host = engines
    ids = cuda.tokenize(PROMPT * 6)  # a random MoE has fewer clear positions: a longer text gives enough
    got, want = cuda.score(ids), host.score(ids)
    assert got.shape == want.shape
    err = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
    assert np.quantile(err, 0.95) < 2e-2, f"relative errors per position: {np.round(err, 4)}"
    top2 = np.sort(want, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.05 * np.abs(want).max(axis=1)
    assert clear.sum() >= 40, f"{clear.sum()} clear positions of {len(ids)}"
    assert (got.argmax(1)[clear] == want.argmax(1)[clear]).mean() >= 0.99


def test_experts_stay_mxfp4_in_vram(engines):
    cuda, _ = engines
    experts = cuda.adapter.layers[0].experts
    assert {experts.gate.qtype, experts.up.qtype, experts.down.qtype} == {Q.MXFP4}
    assert experts.gate.data.nbytes == experts.gate.rows * experts.gate.cols // 32 * 17
    assert cuda.quant_kind == "MXFP4" and cuda.resident
