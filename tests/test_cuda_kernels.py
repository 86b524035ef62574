"""Each CUDA kernel against its NumPy twin (quant.py, ops_numpy.py, sampler.py) on random inputs.

Tolerances: decoded weights match quant.dequantize to fp32 rounding (rtol 1e-6); products and
reductions, which sum in another order, to a relative error norm of 1e-5; attention, whose
cache is fp16, is compared with the twin fed the same fp16-rounded keys and values (1e-5).
The tensor-core prefill GEMMs (matmul_mma, matmul_few_mma below 32 tokens, matmul_gated,
matmul_stacked) round weights and activations to fp16 (M0-W-1201) and sum in fp32: against the
twin fed the same fp16-rounded inputs every element lies within fp32_sums' bound for an fp32 sum
of those products (k and the fp32 unit roundoff); against the exact (fp64) product of the
unrounded inputs, the relative error norm is under FP16_INPUTS_TOLERANCE. That bound is ~3x what
fp16 rounding gives: the fp64 product of fp16-rounded inputs was off by a relative error norm of
2.1e-4 to 3.1e-4 (median and max over 40 random shapes per type, every type, weights of scale
0.05, x standard normal; NumPy on the CPU). Prefill attention on tensor cores (attention_mma)
rounds the scaled q and the softmax weights to fp16: FP16_ATTENTION_TOLERANCE against the twin
in fp64; q's rounding alone moves it by 1.6e-4 to 2.2e-4 (median and max over 30 random cases,
NumPy), the weights' by about as much.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reference_worker import ops_numpy, sampler
from fp32_sums import assert_within, product_bound, swiglu_bound
from reference_worker.cuda import cuda_unavailable_reason
from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.quant import dequantize
from reference_worker.synthetic import encode_weight

pytestmark = pytest.mark.cuda
if (REASON := cuda_unavailable_reason()) is not None:
    pytest.skip(f"CUDA backend unavailable: {REASON}", allow_module_level=True)

import cupy as cp  # noqa: E402

from reference_worker.cuda import driver_launch, kernels  # noqa: E402
from reference_worker.cuda.kernels import DeviceWeight  # noqa: E402

WEIGHT_TYPES = list(kernels.WEIGHT_KERNELS)
K_QUANTS = (Q.Q4_K, Q.Q6_K)
GPU_SETTINGS = settings(max_examples=15, deadline=None)
FP16_INPUTS_TOLERANCE = 1e-3
FP16_ATTENTION_TOLERANCE = 2e-3


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def random_weight(qtype: Q, rows: int, cols: int, seed: int) -> tuple[DeviceWeight, np.ndarray]:
    """A weight in qtype's encoding on the device, and its decoded twin on the host."""
    raw = encode_weight(np.random.default_rng(seed), qtype, rows, cols, 0.05)
    raw = np.ascontiguousarray(raw).view(np.uint8).reshape(rows, -1)
    return DeviceWeight(qtype, rows, cols, cp.asarray(raw)), dequantize(raw, qtype)


def cols_for(qtype: Q, units: int) -> int:
    return 256 * max(1, units // 8) if qtype in K_QUANTS else 32 * units


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
@GPU_SETTINGS
@given(rows=st.integers(1, 40), units=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_embedding_rows_decode_as_quant_py(qtype, rows, units, seed):
    weight, twin = random_weight(qtype, rows, cols_for(qtype, units), seed)
    ids = np.random.default_rng(seed).integers(0, rows, size=7).astype(np.int32)
    out = kernels.embed(weight, cp.asarray(ids), cp.full((7, weight.cols), np.nan, np.float32))
    np.testing.assert_allclose(out.get(), twin[ids], rtol=1e-6, atol=1e-6 * np.abs(twin).max())


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
# 3, 9, 19: one to three token groups of matmul_few (rows of 2048+ values split over four warps);
# 32 and 70: one and three tiles of matmul_tiled.
@pytest.mark.parametrize("n_tok", [1, 3, 9, 19, 32, 70])
@settings(max_examples=6, deadline=None)
@given(rows=st.integers(1, 300), units=st.integers(1, 160), seed=st.integers(0, 2**32 - 1),
       with_bias=st.booleans(), with_residual=st.booleans())
def test_matmul_matches_decoded_product(qtype, n_tok, rows, units, seed, with_bias, with_residual):
    weight, twin, x, bias, residual = matmul_case(qtype, n_tok, rows, units, seed, with_bias, with_residual)
    out = device_matmul(weight, x, bias, residual, prefill="tiled")
    want = ops_numpy.matmul(x.astype(np.float64), twin.astype(np.float64), bias, residual)
    assert rel_err(out, want) < 1e-5


def matmul_case(qtype, n_tok, rows, units, seed, with_bias, with_residual):
    """A random weight (device, decoded twin), x (n_tok, cols) and optional bias and residual."""
    weight, twin = random_weight(qtype, rows, cols_for(qtype, units), seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((n_tok, weight.cols)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32) if with_bias else None
    residual = rng.standard_normal((n_tok, rows)).astype(np.float32) if with_residual else None
    return weight, twin, x, bias, residual


def device_matmul(weight, x, bias, residual, prefill=None) -> np.ndarray:
    out = kernels.matmul(weight, cp.asarray(x), cp.full((x.shape[0], weight.rows), np.nan, np.float32),
                         None if bias is None else cp.asarray(bias), None if residual is None else cp.asarray(residual),
                         prefill)
    return out.get()


def fp16_rounded(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).astype(np.float64)


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("prefill", [*kernels.PREFILL_KERNELS[1:], None])  # None: the tile the launcher picks
@settings(max_examples=6, deadline=None)
@given(n_tok=st.integers(32, 600), rows=st.integers(1, 300), units=st.integers(1, 160),
       seed=st.integers(0, 2**32 - 1), with_bias=st.booleans(), with_residual=st.booleans())
@example(n_tok=600, rows=300, units=160, seed=7, with_bias=True, with_residual=True)
@example(n_tok=32, rows=1, units=1, seed=8, with_bias=False, with_residual=False)
def test_tensor_core_prefill_is_the_product_of_fp16_inputs(qtype, prefill, n_tok, rows, units, seed, with_bias,
                                                           with_residual):
    weight, twin, x, bias, residual = matmul_case(qtype, n_tok, rows, units, seed, with_bias, with_residual)
    out = device_matmul(weight, x, bias, residual, prefill)
    x16, w16 = fp16_rounded(x), fp16_rounded(twin)
    assert_within(out, ops_numpy.matmul(x16, w16, bias, residual), product_bound(x16, w16, bias, residual))
    assert rel_err(out, ops_numpy.matmul(x.astype(np.float64), twin.astype(np.float64), bias, residual)) \
        < FP16_INPUTS_TOLERANCE


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
@settings(max_examples=6, deadline=None)
@given(n_tok=st.integers(2, 31), rows=st.integers(1, 300), units=st.integers(1, 160),
       seed=st.integers(0, 2**32 - 1), with_bias=st.booleans(), with_residual=st.booleans())
@example(n_tok=8, rows=300, units=152, seed=7, with_bias=True, with_residual=True)  # 16 warps a block
@example(n_tok=17, rows=1, units=1, seed=8, with_bias=False, with_residual=False)
def test_few_token_prefill_on_tensor_cores_is_the_product_of_fp16_inputs(qtype, n_tok, rows, units, seed, with_bias,
                                                                        with_residual):
    # matmul_few_mma: 2..31 tokens, weights and x rounded to fp16 as the tiled GEMMs on tensor cores.
    weight, twin, x, bias, residual = matmul_case(qtype, n_tok, rows, units, seed, with_bias, with_residual)
    out = device_matmul(weight, x, bias, residual)
    x16, w16 = fp16_rounded(x), fp16_rounded(twin)
    assert_within(out, ops_numpy.matmul(x16, w16, bias, residual), product_bound(x16, w16, bias, residual))
    assert rel_err(out, ops_numpy.matmul(x.astype(np.float64), twin.astype(np.float64), bias, residual)) \
        < FP16_INPUTS_TOLERANCE


def test_few_token_prefill_with_units_split_over_warps_is_the_same_every_run():
    # 896 rows of 4864 values and 8 tokens: 56 blocks of 16 warps, each warp every 16th unit,
    # the warps' sums added in warp order (M0-W-1826).
    weight, _, x, bias, residual = matmul_case(Q.Q6_K, 8, 896, 152, 4, True, True)
    runs = [device_matmul(weight, x, bias, residual) for _ in range(3)]
    assert all(np.array_equal(run, runs[0]) for run in runs)


@pytest.mark.parametrize("prefill", kernels.PREFILL_KERNELS)
def test_prefill_with_rows_split_over_blocks_is_the_same_every_run(prefill):
    # 128 rows of 4864 values and 64 tokens are too few tiles to fill the GPU: each row is split
    # in parts that sum_splits adds in a fixed order (M0-W-1826).
    weight, twin, x, bias, residual = matmul_case(Q.Q4_K, 64, 128, 152, 3, True, True)
    runs = [device_matmul(weight, x, bias, residual, prefill) for _ in range(3)]
    assert all(np.array_equal(run, runs[0]) for run in runs)
    want = ops_numpy.matmul(x.astype(np.float64), twin.astype(np.float64), bias, residual)
    assert rel_err(runs[0], want) < (1e-5 if prefill == "tiled" else FP16_INPUTS_TOLERANCE)


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
@settings(max_examples=4, deadline=None)
@given(n_tok=st.integers(2, 300), rows=st.integers(1, 200), units=st.integers(1, 64), seed=st.integers(0, 2**32 - 1))
@example(n_tok=8, rows=200, units=28, seed=3)  # matmul_gated_few_mma, as an 8-token graph runs gate and up
def test_gated_prefill_is_the_swiglu_of_fp16_products(qtype, n_tok, rows, units, seed):
    (gate, gate_twin), (up, up_twin) = (random_weight(qtype, rows, cols_for(qtype, units), seed + i) for i in range(2))
    x = np.random.default_rng(seed).standard_normal((n_tok, gate.cols)).astype(np.float32)
    out = kernels.matmul_gated(gate, up, cp.asarray(x), cp.full((n_tok, rows), np.nan, np.float32)).get()
    h, g16, u16 = fp16_rounded(x), fp16_rounded(gate_twin), fp16_rounded(up_twin)
    g, u = ops_numpy.matmul(h, g16), ops_numpy.matmul(h, u16)
    assert_within(out, ops_numpy.silu_mul(g, u), swiglu_bound(g, u, product_bound(h, g16), product_bound(h, u16)))
    h = x.astype(np.float64)
    exact = ops_numpy.silu_mul(ops_numpy.matmul(h, gate_twin.astype(np.float64)),
                               ops_numpy.matmul(h, up_twin.astype(np.float64)))
    assert rel_err(out, exact) < 2 * FP16_INPUTS_TOLERANCE  # a product of two rounded sums


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("rows", [(896, 128, 128), (128, 64, 1), (64, 200)])
@settings(max_examples=3, deadline=None)
@given(n_tok=st.integers(32, 300), units=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), biased=st.booleans())
def test_stacked_prefill_projections_are_each_matrix_product(qtype, rows, n_tok, units, seed, biased):
    pairs = [random_weight(qtype, n, cols_for(qtype, units), seed + i) for i, n in enumerate(rows)]
    weights = [w for w, _ in pairs]
    rng = np.random.default_rng(seed)
    biases = [rng.standard_normal(w.rows).astype(np.float32) if biased else None for w in weights]
    x = rng.standard_normal((n_tok, weights[0].cols)).astype(np.float32)
    assert kernels.stacks_on_tensor_cores(weights, n_tok)
    outs = kernels.matmul_stacked(weights, [None if b is None else cp.asarray(b) for b in biases], cp.asarray(x),
                                  [cp.full((n_tok, w.rows), np.nan, np.float32) for w in weights])
    x16 = fp16_rounded(x)
    for out, (_, twin), bias in zip(outs, pairs, biases):
        w16 = fp16_rounded(twin)
        assert_within(out.get(), ops_numpy.matmul(x16, w16, bias), product_bound(x16, w16, bias))


def test_matmul_refuses_an_unknown_prefill_kernel():
    weight, _ = random_weight(Q.Q8_0, 4, 32, 0)
    with pytest.raises(ValueError, match="prefill kernel"):
        kernels.matmul(weight, cp.zeros((40, 32), np.float32), cp.zeros((40, 4), np.float32), prefill="mma_16")


def test_rmsnorm_matches_twin():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((5, 896)).astype(np.float32) * 3, rng.standard_normal(896).astype(np.float32)
    out = kernels.rmsnorm(cp.asarray(x), cp.asarray(w), 1e-6, cp.empty((5, 896), np.float32))
    assert rel_err(out.get(), ops_numpy.rmsnorm(x, w, 1e-6)) < 1e-5


@pytest.mark.parametrize("neox", [True, False])
@GPU_SETTINGS
@given(start=st.integers(0, 4000), n=st.integers(1, 9), seed=st.integers(0, 1000))
def test_rope_matches_twin(neox, start, n, seed):
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((n, 3, 64)).astype(np.float32), rng.standard_normal((n, 2, 64)).astype(np.float32)
    dq, dk = cp.asarray(q), cp.asarray(k)
    got_q, got_k = kernels.rope(dq, cp.asarray([start], np.int32), 1e6, neox, cp.full_like(dq, np.nan),
                                dk, cp.full_like(dk, np.nan))
    want_q, want_k = ops_numpy.rope(q, k, np.arange(start, start + n), 1e6, neox)
    # The twin's angles are float64; an fp32 angle is off by about position * 1e-7 rad.
    tolerance = max(1e-5, 4e-7 * (start + n))
    assert rel_err(got_q.get(), want_q) < tolerance and rel_err(got_k.get(), want_k) < tolerance
    alone = kernels.rope(dq, cp.asarray([start], np.int32), 1e6, neox, cp.full_like(dq, np.nan))
    assert cp.array_equal(alone, got_q)


@GPU_SETTINGS
@given(start=st.integers(0, 300), n=st.integers(1, 40), group=st.sampled_from([1, 2, 7]),
       head_dim=st.sampled_from([32, 64, 128]), seed=st.integers(0, 1000))
def test_attention_prefill_and_decode_match_twin(start, n, group, head_dim, seed):
    rng = np.random.default_rng(seed)
    n_kv, ctx = 2, start + n + 5
    q = rng.standard_normal((n, n_kv * group, head_dim)).astype(np.float32)
    # Keys and values of earlier positions, then of these tokens; fp16 as the cache keeps them.
    k_all = rng.standard_normal((start + n, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    v_all = rng.standard_normal((start + n, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    twin_cache = ops_numpy.KVCache(ctx, (ctx,), n_kv, head_dim)
    if start:
        ops_numpy.attention(q[:1].repeat(start, 0), k_all[:start], v_all[:start], twin_cache, 0, 0)
    want = ops_numpy.attention(q, k_all[start:], v_all[start:], twin_cache, 0, start)

    k_cache, v_cache = cp.zeros((n_kv, ctx, head_dim), np.float16), cp.zeros((n_kv, ctx, head_dim), np.float16)
    if start:
        kernels.kv_store(cp.asarray(k_all[:start]), cp.asarray(v_all[:start]), k_cache, v_cache,
                         cp.asarray([0], np.int32))
    pos0 = cp.asarray([start], np.int32)
    kernels.kv_store(cp.asarray(k_all[start:]), cp.asarray(v_all[start:]), k_cache, v_cache, pos0)
    out = kernels.attention(cp.asarray(q), k_cache, v_cache, pos0, cp.full(q.shape, np.nan, np.float32),
                            tensor_cores=False)
    assert rel_err(out.get().reshape(n, -1), want) < 1e-5


def twin_prefill_attention(q, k_all, v_all, start: int, sinks=None, window: int = 0):
    """ops_numpy.attention of q's tokens at positions start.. over a cache that first took
    positions 0..start-1 of k_all and v_all (positions, KVH, D)."""
    n_kv, head_dim = k_all.shape[1:]
    cache = ops_numpy.KVCache(len(k_all), (len(k_all),), n_kv, head_dim)
    if start:
        ops_numpy.attention(q[:1].repeat(start, 0), k_all[:start], v_all[:start], cache, 0, 0)
    return ops_numpy.attention(q, k_all[start:], v_all[start:], cache, 0, start, sinks, window)


@settings(max_examples=25, deadline=None)
@given(start=st.integers(0, 600), n=st.integers(kernels.FA_MIN_TOKENS, 300), group=st.sampled_from([1, 2, 7]),
       head_dim=st.sampled_from(kernels.FA_HEAD_DIMS), window=st.sampled_from([0, 1, 8, 128]),
       with_sinks=st.booleans(), seed=st.integers(0, 1000))
def test_tensor_core_prefill_attention_matches_twin(start, n, group, head_dim, window, with_sinks, seed):
    rng = np.random.default_rng(seed)
    n_kv, ctx = 2, start + n + 70  # positions past the prompt hold NaN: they must never be read
    q = rng.standard_normal((n, n_kv * group, head_dim)).astype(np.float32)
    k_all = rng.standard_normal((start + n, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    v_all = rng.standard_normal((start + n, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    sinks = (rng.standard_normal(n_kv * group) * 3).astype(np.float32) if with_sinks else None
    want = twin_prefill_attention(q.astype(np.float64), k_all, v_all, start, sinks, window)

    k_cache, v_cache = (cp.full((n_kv, ctx, head_dim), np.nan, np.float16) for _ in range(2))
    kernels.kv_store(cp.asarray(k_all), cp.asarray(v_all), k_cache, v_cache, cp.asarray([0], np.int32))
    out = kernels.attention(cp.asarray(q), k_cache, v_cache, cp.asarray([start], np.int32),
                            cp.full(q.shape, np.nan, np.float32), None if sinks is None else cp.asarray(sinks), window)
    assert rel_err(out.get().reshape(n, -1), want) < FP16_ATTENTION_TOLERANCE


@GPU_SETTINGS
@given(start=st.integers(0, 700), group=st.sampled_from([1, 7]), head_dim=st.sampled_from([64, 128]),
       neox=st.booleans(), seed=st.integers(0, 1000))
def test_decode_attention_rotates_stores_then_attends_like_the_twin(start, group, head_dim, neox, seed):
    rng = np.random.default_rng(seed)
    n_kv, ctx = 2, start + 1 + int(rng.integers(0, 200))
    q = rng.standard_normal((1, n_kv * group, head_dim)).astype(np.float32)
    # Earlier positions as the cache holds them (rotated, fp16); the new key and value as the
    # projections give them (the kernel rotates q and the key for position `start`).
    k_all = rng.standard_normal((start + 1, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    v_all = rng.standard_normal((start + 1, n_kv, head_dim)).astype(np.float16).astype(np.float32)
    twin_cache = ops_numpy.KVCache(ctx, (ctx,), n_kv, head_dim)
    if start:
        ops_numpy.attention(q.repeat(start, 0), k_all[:start], v_all[:start], twin_cache, 0, 0)
    rotated_q, rotated_k = ops_numpy.rope(q, k_all[start:], np.array([start]), 1e6, neox)
    stored_k = rotated_k.astype(np.float16).astype(np.float32)
    want = ops_numpy.attention(rotated_q, stored_k, v_all[start:], twin_cache, 0, start)

    k_cache = cp.full((n_kv, ctx, head_dim), np.nan, np.float16)  # unwritten positions must not be read
    v_cache = cp.full((n_kv, ctx, head_dim), np.nan, np.float16)
    if start:
        kernels.kv_store(cp.asarray(k_all[:start]), cp.asarray(v_all[:start]), k_cache, v_cache,
                         cp.asarray([0], np.int32))
    tickets = kernels.attention_tickets()
    out = kernels.attention_decode(cp.asarray(q), cp.asarray(k_all[start:]), cp.asarray(v_all[start:]), k_cache,
                                   v_cache, cp.asarray([start], np.int32), 1e6, neox,
                                   cp.full(q.shape, np.nan, np.float32), tickets)
    assert not tickets.get().any()  # each head's last block set its counter back for the next launch
    # The GPU's fp32 angles differ from the twin's float64 ones by about position * 1e-7 rad, so
    # the stored key may round to the neighbouring fp16 value: 1e-3, where a wrong rotation is O(1).
    assert rel_err(out.get().reshape(1, -1), want) < 1e-3
    np.testing.assert_allclose(k_cache[:, start].get().astype(np.float32), stored_k[0], rtol=2e-3, atol=2e-3)
    assert np.array_equal(v_cache[:, start].get().astype(np.float32), v_all[start])


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
@settings(max_examples=6, deadline=None)
@given(rows=st.integers(1, 300), units=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
def test_gated_matvec_matches_twin(qtype, rows, units, seed):
    (w_gate, gate_twin), (w_up, up_twin) = (random_weight(qtype, rows, cols_for(qtype, units), seed + i) for i in (0, 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, w_gate.cols)).astype(np.float32) * 3
    norm = rng.standard_normal(w_gate.cols).astype(np.float32)
    out = kernels.matvec_gated(w_gate, w_up, cp.asarray(x), cp.asarray(norm), 1e-6, cp.full((1, rows), np.nan, np.float32))
    want = ops_numpy.rmsnorm_gated_ffn(*(a.astype(np.float64) for a in (x, norm)), 1e-6, gate_twin.astype(np.float64),
                                       up_twin.astype(np.float64))
    assert rel_err(out.get(), want) < 1e-5


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
@settings(max_examples=6, deadline=None)
@given(rows=st.lists(st.integers(1, 300), min_size=1, max_size=3), units=st.integers(1, 60),
       biased=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_normed_matvec_of_stacked_matrices_matches_twin(qtype, rows, units, biased, seed):
    cols = cols_for(qtype, units)
    check_normed_matvec(*zip(*(random_weight(qtype, r, cols, seed + i) for i, r in enumerate(rows))), biased, seed)


@pytest.mark.parametrize("types", sorted(kernels.NORMED_PAIRS), ids=lambda t: f"{t[0].name}+{t[1].name}")
@settings(max_examples=6, deadline=None)
@given(rows=st.lists(st.integers(1, 300), min_size=3, max_size=3), units=st.integers(1, 60),
       biased=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_normed_matvec_of_a_pair_of_types_matches_twin(types, rows, units, biased, seed):
    cols = max(cols_for(t, units) for t in types)
    weights, twins = zip(*(random_weight(types[i == 2], r, cols, seed + i) for i, r in enumerate(rows)))
    assert kernels.normed_pair(weights)
    check_normed_matvec(weights, twins, biased, seed)


def check_normed_matvec(weights, twins, biased, seed):
    """matvec_normed of `weights` (with random biases where `biased`) against the twins' rmsnorm_matmuls."""
    rng = np.random.default_rng(seed)
    cols, rows = weights[0].cols, [w.rows for w in weights]
    x = rng.standard_normal((1, cols)).astype(np.float32) * 3
    norm = rng.standard_normal(cols).astype(np.float32)
    biases = [rng.standard_normal(r).astype(np.float32) if biased else None for r in rows]
    outs = kernels.matvec_normed(weights, [None if b is None else cp.asarray(b) for b in biases], cp.asarray(x),
                                 cp.asarray(norm), 1e-6, [cp.full((1, r), np.nan, np.float32) for r in rows])
    wants = ops_numpy.rmsnorm_matmuls(x.astype(np.float64), norm.astype(np.float64), 1e-6,
                                      [(t.astype(np.float64), b) for t, b in zip(twins, biases)])
    assert len(outs) == len(rows)
    for out, want in zip(outs, wants):
        assert rel_err(out.get(), want) < 1e-5


def test_normed_matvec_refuses_mixed_types():
    (q, _), (v, _) = random_weight(Q.Q5_0, 8, 64, 1), random_weight(Q.Q8_0, 8, 64, 2)
    for weights in ([q, v], [v, v, q]):  # two matrices; a pair outside NORMED_PAIRS
        with pytest.raises(ValueError, match="one type"):
            kernels.matvec_normed(weights, [None] * len(weights), cp.zeros((1, 64), np.float32),
                                  cp.ones(64, np.float32), 1e-6, [cp.empty((1, 8), np.float32)] * len(weights))


def test_swiglu_matches_twin():
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((4, 1000)).astype(np.float32) * 4 for _ in range(2))
    da, db = cp.asarray(a), cp.asarray(b)
    assert rel_err(kernels.swiglu(da, db, cp.empty_like(da)).get(), ops_numpy.silu_mul(a, b)) < 1e-5


@GPU_SETTINGS
@given(n=st.integers(1, 200_000), seed=st.integers(0, 1000), ties=st.booleans())
def test_argmax_is_numpy_argmax(n, seed, ties):
    rng = np.random.default_rng(seed)
    x = (rng.integers(-3, 3, n) if ties else rng.standard_normal(n)).astype(np.float32)
    assert int(kernels.argmax(cp.asarray(x), cp.zeros(1, np.int32)).get()[0]) == int(np.argmax(x))


def _sample_many(logits: np.ndarray, params: sampler.SamplingParams, draws: int, history=(), seed: int = 1234,
                 first_position: int = 0) -> np.ndarray:
    """Draw `draws` tokens on the GPU, one per position (the position seeds the draw); one
    scratch buffer serves them all, as in a decode loop."""
    dev = cp.asarray(logits.astype(np.float32))
    fparams = cp.asarray([params.temperature, params.top_p, params.min_p, params.repetition_penalty], np.float32)
    iparams = cp.asarray([params.top_k, seed & 0xFFFFFFFF, seed >> 32], np.uint32)
    hist = cp.asarray(np.asarray(history, np.int32).reshape(-1)) if len(history) else cp.zeros(1, np.int32)
    mask = cp.zeros(len(logits), np.int32)
    scratch = kernels.sample_scratch()
    picks = []
    for position in range(first_position, first_position + draws):
        state = cp.asarray([position, -1, len(history)], np.int32)
        work = dev.copy()
        kernels.repetition_penalty(work, hist, state[2:3], mask, fparams)
        kernels.sample(work, fparams, iparams, state, scratch)
        picks.append(int(state[1].get()))
    return np.array(picks)


def _twin_probabilities(logits: np.ndarray, params: sampler.SamplingParams, history=()) -> np.ndarray:
    """sampler.py's distribution over the ids: its own filters, in its order."""
    p = params
    # The GPU's float32 logits (ties among them are ties for the twin too).
    filtered = np.nan_to_num(logits.astype(np.float32).astype(np.float64), nan=-np.inf, posinf=1e300)
    filtered = sampler.apply_repetition_penalty(filtered, history, p.repetition_penalty)
    filtered = sampler.min_p_filter(sampler.top_p_filter(sampler.top_k_filter(filtered, p.top_k), p.top_p), p.min_p)
    return sampler.softmax(filtered / p.temperature)


def _assert_draws_follow(draws: np.ndarray, want: np.ndarray, tolerance: float) -> None:
    """Every draw has probability > 0 under `want`, and the draws fill ten bins of about equal
    probability (tokens in id order) as `want` does: total variation over the bins."""
    assert want[draws].min() > 0, f"drew {draws[want[draws] == 0][:5]}, which the filters remove"
    bins = np.minimum((np.cumsum(want) - want / 2) * 10, 9).astype(int)
    expected = np.bincount(bins, weights=want, minlength=10)
    got = np.bincount(bins[draws], minlength=10) / len(draws)
    assert 0.5 * np.abs(got - expected).sum() < tolerance


@GPU_SETTINGS
@given(seed=st.integers(0, 1000), penalty=st.sampled_from([1.0, 1.3, 0.7]))
def test_greedy_sampling_is_the_twins_choice(seed, penalty):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(5000).astype(np.float32) * 3
    history = rng.integers(0, 5000, 30)
    params = sampler.SamplingParams(temperature=0.0, repetition_penalty=penalty)
    want = sampler.Sampler(params, 0).sample(logits, list(history))
    assert set(_sample_many(logits, params, 2, history)) == {want}


@pytest.mark.parametrize("params", [
    sampler.SamplingParams(temperature=0.8),
    sampler.SamplingParams(temperature=1.3, top_k=3),
    sampler.SamplingParams(temperature=1.0, top_p=0.7),
    sampler.SamplingParams(temperature=0.7, min_p=0.2),
    sampler.SamplingParams(temperature=1.0, top_k=5, top_p=0.9, min_p=0.05, repetition_penalty=1.5),
], ids=["temperature", "top_k", "top_p", "min_p", "all"])
def test_sampling_draws_follow_the_twins_distribution(params):
    logits = np.array([2.0, 1.5, 1.2, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0], np.float32)
    history = [0, 3]
    want = _twin_probabilities(logits, params, history)
    draws = _sample_many(logits, params, 3000, history)
    got = np.bincount(draws, minlength=len(logits)) / len(draws)
    assert set(np.flatnonzero(got)) <= set(np.flatnonzero(want)), "drew a token the filters remove"
    assert 0.5 * np.abs(got - want).sum() < 0.05  # total variation; 3000 draws give ~0.02


@pytest.mark.parametrize("n", [9, 499, 5000])
def test_sampling_draws_stay_in_the_vocabulary_and_follow_softmax_at_any_size(n):
    # A 499-token synthetic vocabulary once drew ids outside it: the threads disagreed on
    # whether to fall back to argmax (sampling.cu, `chosen`).
    logits = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 2
    draws = _sample_many(logits, sampler.SamplingParams(temperature=1.0), 3000)
    assert draws.min() >= 0 and draws.max() < n
    # 3000 draws fill each of ten bins well enough to compare, whatever n is (noise ~0.02).
    _assert_draws_follow(draws, sampler.softmax(logits.astype(np.float64)), 0.06)


VOCAB = 151936  # the real model's
_RNG = np.random.default_rng(7)
# Logits for each path through sampling.cu (its header): name -> (logits, params).
SAMPLER_PATHS = {
    # top-k's boundary found by the first histogram; top-p and min-p over the candidates
    "top-k 40, top-p 0.9, min-p 0.05": (_RNG.standard_normal(VOCAB) * 3,
                                        sampler.SamplingParams(temperature=0.8, top_k=40, top_p=0.9, min_p=0.05)),
    # every logit in one 12-bit bin: the second histogram finds the boundary
    "top-k 40 within one bin": (16 + 1e-3 * _RNG.standard_normal(VOCAB),
                                sampler.SamplingParams(temperature=1.0, top_k=40)),
    # ties at the boundary are all kept (about 830 logits equal the 3rd largest)
    "top-k 3 over ties": (_RNG.integers(-3, 3, 5000).astype(np.float64),
                          sampler.SamplingParams(temperature=1.0, top_k=3)),
    # more ties than candidates: the exact search
    "top-k 3 over 8,000 ties": (_RNG.integers(-3, 3, 50000).astype(np.float64),
                                sampler.SamplingParams(temperature=1.0, top_k=3)),
    # top-p alone, its set (~760 tokens) inside the 2048 candidates
    "top-p 0.9, peaked": (_RNG.standard_normal(VOCAB) * 4, sampler.SamplingParams(temperature=1.0, top_p=0.9)),
    # top-p alone, its set (~93,000 tokens) past the candidates: the exact search
    "top-p 0.9, flat": (_RNG.standard_normal(VOCAB), sampler.SamplingParams(temperature=1.0, top_p=0.9)),
    # top-k above the candidates: the exact search
    "top-k 3000, top-p 0.5": (_RNG.standard_normal(VOCAB) * 2,
                              sampler.SamplingParams(temperature=1.0, top_k=3000, top_p=0.5)),
    # temperature and min-p alone: a draw over the whole vocabulary
    "temperature 1.2": (_RNG.standard_normal(VOCAB) * 2, sampler.SamplingParams(temperature=1.2)),
    "min-p 0.01": (_RNG.standard_normal(VOCAB) * 2, sampler.SamplingParams(temperature=1.0, min_p=0.01)),
}


@pytest.mark.parametrize("path", list(SAMPLER_PATHS))
def test_each_sampling_path_follows_the_twin_on_a_large_vocabulary(path):
    logits, params = SAMPLER_PATHS[path]
    history = [0, 17, 4242]
    draws = _sample_many(logits, dataclasses.replace(params, repetition_penalty=1.3), 2000, history)
    _assert_draws_follow(draws, _twin_probabilities(logits, dataclasses.replace(params, repetition_penalty=1.3),
                                                    history), 0.07)


@pytest.mark.parametrize("path", list(SAMPLER_PATHS))
def test_a_seed_and_position_give_the_same_token_every_run(path):
    # M0-W-1826: the candidates arrive in any order (atomics) and are sorted; sums run in a fixed order.
    logits, params = SAMPLER_PATHS[path]
    first = _sample_many(logits, params, 20, seed=99)
    assert np.array_equal(first, _sample_many(logits, params, 20, seed=99))
    assert not np.array_equal(first, _sample_many(logits, params, 20, seed=100)) or len(set(first)) == 1


def test_nan_is_never_drawn_and_an_infinite_logit_always_is():
    logits = np.random.default_rng(3).standard_normal(VOCAB).astype(np.float32)
    logits[::7] = np.nan
    for params in (sampler.SamplingParams(temperature=1.0), sampler.SamplingParams(temperature=1.0, top_k=40),
                   sampler.SamplingParams(temperature=1.0, top_p=0.5)):
        draws = _sample_many(logits, params, 200)
        assert not np.isnan(logits[draws]).any()
    logits[1234] = np.inf
    for params in (sampler.SamplingParams(temperature=1.0), sampler.SamplingParams(temperature=0.7, top_k=40, top_p=0.9)):
        assert set(_sample_many(logits, params, 50)) == {1234}


def test_sampling_replayed_from_a_cuda_graph_draws_what_eager_launches_draw():
    logits, params = SAMPLER_PATHS["top-k 40, top-p 0.9, min-p 0.05"]
    eager = _sample_many(logits, params, 30, seed=5)
    dev = cp.asarray(logits.astype(np.float32))
    fparams = cp.asarray([params.temperature, params.top_p, params.min_p, 1.0], np.float32)
    iparams = cp.asarray([params.top_k, 5, 0], np.uint32)
    state, scratch = cp.asarray([0, -1, 0], np.int32), kernels.sample_scratch()
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        kernels.sample(dev, fparams, iparams, state, scratch)
        graph = stream.end_capture()
        replayed = []
        for position in range(30):
            state[0] = position
            graph.launch(stream)
            replayed.append(int(state[1].get()))
    assert replayed == eager.tolist()


def test_launchers_refuse_wrong_shapes_and_dtypes():
    weight, _ = random_weight(Q.Q8_0, 4, 64, 0)
    with pytest.raises(ValueError, match="float32"):
        kernels.matmul(weight, cp.zeros((1, 64), np.float16), cp.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="shape"):
        kernels.matmul(weight, cp.zeros((1, 32), np.float32), cp.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="cupy array"):
        kernels.rmsnorm(np.zeros((1, 4), np.float32), cp.zeros(4, np.float32), 1e-6, cp.zeros((1, 4), np.float32))


def test_a_failed_launch_is_a_cuda_error():
    x = cp.zeros(4, np.float32)
    args = (x, x, x, np.int64(4))
    with pytest.raises(WorkerError) as err:
        kernels._launch("layers", "swiglu", (1,), (4096,), args)  # too many threads per block
    assert err.value.code is ErrorCode.CUDA_ERROR
    # the driver's launch, which graphs record with programmatic edges, fails the same way
    with pytest.raises(WorkerError) as err, kernels.cuda_errors("a kernel"):
        driver_launch.driver().launch(kernels._function_handle("layers", "swiglu"), (1,), (4096,),
                                      cp.cuda.get_current_stream().ptr, args, 0, kernels._PROGRAMMATIC)
    assert err.value.code is ErrorCode.CUDA_ERROR and "cuLaunchKernelEx" in str(err.value)


def test_programmatic_dependent_launch_is_used_from_sm_90():
    sm = int(cp.cuda.Device().compute_capability)
    try:
        assert kernels.use_programmatic_launch(True) is (sm >= 90)
        assert kernels.use_programmatic_launch(False) is False
    finally:
        kernels.use_programmatic_launch()


def test_a_chain_of_dependent_kernels_computes_the_same_with_and_without_programmatic_launch():
    # Each kernel reads what the one before wrote and overwrites what it read (read after write,
    # write after read), on a stream and replayed from a graph: what the waits must order.
    weight, _ = random_weight(Q.Q5_0, 896, 896, 1)
    norm = cp.asarray(np.random.default_rng(2).standard_normal(896).astype(np.float32))
    results = {}
    try:
        for programmatic in (True, False):
            kernels.use_programmatic_launch(programmatic)
            x = cp.asarray(np.random.default_rng(3).standard_normal((1, 896)).astype(np.float32))
            y, z = cp.empty_like(x), cp.empty_like(x)

            def chain():
                for _ in range(20):
                    kernels.rmsnorm(x, norm, 1e-6, y)
                    kernels.matmul(weight, y, z, residual=x)
                    kernels.matmul(weight, z, x)

            stream = cp.cuda.Stream(non_blocking=True)
            with stream:
                chain()
                eager = x.get()
                stream.begin_capture()
                chain()
                graph = stream.end_capture()
                graph.launch(stream)
                results[programmatic] = (eager, x.get())
    finally:
        kernels.use_programmatic_launch()
    assert all(np.array_equal(a, b) for a, b in zip(results[True], results[False]))
    assert np.isfinite(results[True][1]).all()
