"""The tensor-core prefill kernels (gemm_mma.cuh's matmul_mma_impl, matmul_gated_mma_impl,
matmul_stacked_mma_impl, the few-token matmul_few_mma_impl and matmul_gated_few_mma_impl,
attention.cu's attention_mma_*) run on the CPU (tests/cuda_on_cpu: each
CUDA thread a fiber, mma.sync and ldmatrix emulated from the PTX ISA's fragment layouts) against
their NumPy twins, so their index arithmetic, masks and online softmax are checked where there
is no GPU. Bounds as in test_cuda_kernels.py: the GEMMs within fp32_sums' bound of the twin fed
the same fp16-rounded inputs, attention to 2e-3 of the fp64 twin.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q

import cpu_emulation
from fp32_sums import assert_within, product_bound, swiglu_bound
from reference_worker import ops_numpy
from reference_worker.quant import dequantize
from reference_worker.synthetic import encode_weight

pytestmark = pytest.mark.slow


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def fp16_rounded(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).astype(np.float64)


@pytest.fixture(scope="module")
def mma_main(tmp_path_factory) -> Path:
    return cpu_emulation.build(tmp_path_factory, "mma_main")


def _write(tmp_path: Path, name: str, array: np.ndarray | None) -> str:
    if array is None:
        return "-"
    path = tmp_path / name
    np.ascontiguousarray(array).tofile(path)
    return str(path)


def _product_case(qtype: Q, rows: int, cols: int, n_tok: int, extras: bool):
    """A weight of `qtype` (its raw blocks), x, and a bias and residual where `extras`."""
    rng = np.random.default_rng(rows + cols + n_tok)
    raw = np.ascontiguousarray(encode_weight(rng, qtype, rows, cols, 0.05)).view(np.uint8).reshape(rows, -1)
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32) if extras else None
    residual = rng.standard_normal((n_tok, rows)).astype(np.float32) if extras else None
    return raw, x, bias, residual


def _assert_product_of_fp16_inputs(out: Path, raw, qtype: Q, x, bias, residual) -> None:
    got = np.fromfile(out, np.float32).reshape(x.shape[0], raw.shape[0])
    x16, w16 = fp16_rounded(x), fp16_rounded(dequantize(raw, qtype))
    assert_within(got, ops_numpy.matmul(x16, w16, bias, residual), product_bound(x16, w16, bias, residual))


def _gated_case(qtype: Q, rows: int, cols: int, n_tok: int, seed: int):
    """Gate and up weights of `qtype` (raw blocks) and x."""
    rng = np.random.default_rng(seed)
    gate, up = (np.ascontiguousarray(encode_weight(rng, qtype, rows, cols, 0.05)).view(np.uint8).reshape(rows, -1)
                for _ in range(2))
    return gate, up, rng.standard_normal((n_tok, cols)).astype(np.float32)


def _assert_swiglu_of_fp16_products(out: Path, gate, up, qtype: Q, x) -> None:
    got = np.fromfile(out, np.float32).reshape(x.shape[0], gate.shape[0])
    h, g16, u16 = fp16_rounded(x), fp16_rounded(dequantize(gate, qtype)), fp16_rounded(dequantize(up, qtype))
    g, u = ops_numpy.matmul(h, g16), ops_numpy.matmul(h, u16)
    assert_within(got, ops_numpy.silu_mul(g, u), swiglu_bound(g, u, product_bound(h, g16), product_bound(h, u16)))


# (type, rows, cols, tokens, splits, bias and residual): rows and tokens off the 64 x 64 tile.
GEMM_CASES = [(Q.Q8_0, 70, 96, 40, 1, True), (Q.Q4_K, 130, 256, 70, 2, True), (Q.Q6_K, 5, 512, 33, 3, False),
              (Q.Q5_0, 64, 64, 64, 1, False), (Q.Q4_0, 1, 32, 65, 1, True), (Q.MXFP4, 100, 128, 32, 4, False),
              (Q.F16, 66, 64, 50, 1, True), (Q.BF16, 20, 96, 140, 1, False), (Q.F32, 40, 64, 36, 2, True)]


@pytest.mark.parametrize("tokens", ["32", "64", "128", "64r32"])  # per block (64r32: 64 in blocks of 32 rows)
@pytest.mark.parametrize("case", GEMM_CASES, ids=lambda c: f"{c[0].name}-{c[1]}x{c[2]}-{c[3]}tok-{c[4]}split")
def test_tensor_core_gemm_on_cpu_is_the_product_of_fp16_inputs(mma_main, tmp_path, case, tokens):
    qtype, rows, cols, n_tok, splits, extras = case
    raw, x, bias, residual = _product_case(qtype, rows, cols, n_tok, extras)
    block, size = GGML_QUANT_SIZES[qtype]
    out = tmp_path / "y.f32"
    subprocess.run([str(mma_main), "gemm", str(int(qtype)), tokens, str(rows), str(cols),
                    str(cols // block * size), str(n_tok), str(splits), _write(tmp_path, "w", raw), _write(tmp_path, "x", x),
                    _write(tmp_path, "b", bias), _write(tmp_path, "r", residual), str(out)], check=True)
    _assert_product_of_fp16_inputs(out, raw, qtype, x, bias, residual)


@pytest.mark.parametrize("tokens, block_rows", [(32, 64), (64, 64), (64, 32)])
@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q8_0])
def test_tensor_core_gated_ffn_on_cpu_is_the_swiglu_of_fp16_products(mma_main, tmp_path, qtype, tokens, block_rows):
    rows, cols, n_tok = 70, 256, 100
    gate, up, x = _gated_case(qtype, rows, cols, n_tok, 5)
    out = tmp_path / "y.f32"
    subprocess.run([str(mma_main), "gated", str(int(qtype)), str(tokens), str(block_rows), str(rows), str(cols),
                    str(gate.shape[1]), str(n_tok), _write(tmp_path, "g", gate), _write(tmp_path, "u", up),
                    _write(tmp_path, "x", x), str(out)], check=True)
    _assert_swiglu_of_fp16_products(out, gate, up, qtype, x)


@pytest.mark.parametrize("tokens, splits", [(32, 1), (64, 1), (32, 3)])
@pytest.mark.parametrize("rows", [(128, 64, 70), (64, 30, 0)], ids=["q-k-v", "two"])
def test_tensor_core_stacked_projections_on_cpu_are_each_matrix_product(mma_main, tmp_path, rows, tokens, splits):
    qtype, cols, n_tok = Q.Q5_0, 96, 70
    rng = np.random.default_rng(sum(rows))
    raw = np.ascontiguousarray(encode_weight(rng, qtype, sum(rows), cols, 0.05)).view(np.uint8).reshape(sum(rows), -1)
    bias = rng.standard_normal(sum(rows)).astype(np.float32)
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    out = tmp_path / "y.f32"
    subprocess.run([str(mma_main), "stacked", str(int(qtype)), str(tokens), str(cols), str(raw.shape[1]),
                    str(n_tok), *map(str, rows), str(splits), _write(tmp_path, "w", raw), _write(tmp_path, "b", bias),
                    _write(tmp_path, "x", x), str(out)], check=True)
    got, x16, twin, begin = np.fromfile(out, np.float32), fp16_rounded(x), fp16_rounded(dequantize(raw, qtype)), 0
    for n in (r for r in rows if r):
        w16, b = twin[begin:begin + n], bias[begin:begin + n]
        assert_within(got[n_tok * begin:n_tok * (begin + n)].reshape(n_tok, n), ops_numpy.matmul(x16, w16, b),
                      product_bound(x16, w16, b))
        begin += n


# (type, rows, cols, tokens, n8 tiles a block, warps a block, bias and residual): rows off the
# 16-row tile, tokens off the 8 NT-token one, units dealt unevenly over the warps.
FEW_CASES = [(Q.Q5_0, 40, 96, 7, 1, 3, True), (Q.Q4_K, 17, 512, 20, 2, 4, True), (Q.Q6_K, 5, 256, 2, 1, 8, False),
             (Q.Q8_0, 16, 64, 8, 1, 1, False), (Q.Q4_0, 33, 160, 31, 2, 2, True), (Q.MXFP4, 20, 128, 9, 1, 4, False),
             (Q.F16, 3, 64, 16, 2, 2, True), (Q.BF16, 24, 96, 12, 2, 3, False), (Q.F32, 18, 64, 5, 1, 2, True)]


@pytest.mark.parametrize("case", FEW_CASES, ids=lambda c: f"{c[0].name}-{c[1]}x{c[2]}-{c[3]}tok-nt{c[4]}-w{c[5]}")
def test_few_token_tensor_core_matmul_on_cpu_is_the_product_of_fp16_inputs(mma_main, tmp_path, case):
    qtype, rows, cols, n_tok, tiles, warps, extras = case
    raw, x, bias, residual = _product_case(qtype, rows, cols, n_tok, extras)
    out = tmp_path / "y.f32"
    subprocess.run([str(mma_main), "few", str(int(qtype)), str(tiles), str(warps), str(rows), str(cols),
                    str(raw.shape[1]), str(n_tok), _write(tmp_path, "w", raw), _write(tmp_path, "x", x),
                    _write(tmp_path, "b", bias), _write(tmp_path, "r", residual), str(out)], check=True)
    _assert_product_of_fp16_inputs(out, raw, qtype, x, bias, residual)


@pytest.mark.parametrize("tiles, warps, n_tok", [(1, 4, 6), (2, 3, 30)])
@pytest.mark.parametrize("qtype", [Q.Q5_0, Q.Q4_K])
def test_few_token_tensor_core_gated_ffn_on_cpu_is_the_swiglu_of_fp16_products(mma_main, tmp_path, qtype, tiles,
                                                                               warps, n_tok):
    rows, cols = 37, 256
    gate, up, x = _gated_case(qtype, rows, cols, n_tok, n_tok)
    out = tmp_path / "y.f32"
    subprocess.run([str(mma_main), "fewgated", str(int(qtype)), str(tiles), str(warps), str(rows), str(cols),
                    str(gate.shape[1]), str(n_tok), _write(tmp_path, "g", gate), _write(tmp_path, "u", up),
                    _write(tmp_path, "x", x), str(out)], check=True)
    _assert_swiglu_of_fp16_products(out, gate, up, qtype, x)


# (start, queries, group, head_dim, window, sinks, ring): with ring, the cache holds window + queries
# positions, position p at slot p % capacity (a sliding-window layer's cache, ops_numpy.new_kv_cache).
ATTENTION_CASES = [(70, 40, 2, 64, 0, False, False), (0, 100, 1, 96, 8, True, False),
                   (130, 20, 7, 128, 128, True, False), (5, 64, 1, 64, 1, False, False),
                   (300, 40, 2, 64, 24, True, True), (130, 20, 7, 128, 128, True, True)]


@pytest.mark.parametrize("case", ATTENTION_CASES,
                         ids=lambda c: f"at{c[0]}-{c[1]}q-g{c[2]}-d{c[3]}-w{c[4]}-s{c[5]:d}{'-ring' * c[6]}")
def test_tensor_core_prefill_attention_on_cpu_matches_twin(mma_main, tmp_path, case):
    start, n, group, head_dim, window, with_sinks, ring = case
    rng = np.random.default_rng(start + n)
    n_kv, n_ctx = 2, start + n + 70
    ctx = window + n if ring else n_ctx  # the slots the kernel's cache has
    q = rng.standard_normal((n, n_kv * group, head_dim)).astype(np.float32)
    k_all = rng.standard_normal((start + n, n_kv, head_dim)).astype(np.float16)
    v_all = rng.standard_normal((start + n, n_kv, head_dim)).astype(np.float16)
    sinks = (rng.standard_normal(n_kv * group) * 3).astype(np.float32) if with_sinks else None
    twin_cache = ops_numpy.KVCache(n_ctx, (ctx,), n_kv, head_dim)
    k32, v32 = k_all.astype(np.float32), v_all.astype(np.float32)
    for begin in range(0, start, n):  # the earlier positions, in chunks a ring can take
        end = min(begin + n, start)
        ops_numpy.attention(q[:1].repeat(end - begin, 0), k32[begin:end], v32[begin:end], twin_cache, 0, begin,
                            None, window)
    want = ops_numpy.attention(q.astype(np.float64), k32[start:], v32[start:], twin_cache, 0, start, sinks, window)
    # The caches (n_kv, ctx, head_dim) hold NaN past the prompt: the kernel must never read it. A
    # ring holds each slot's latest position.
    k_cache, v_cache = (np.full((n_kv, ctx, head_dim), np.nan, np.float16) for _ in range(2))
    slots = np.arange(start + n) % ctx
    k_cache[:, slots], v_cache[:, slots] = k_all.transpose(1, 0, 2), v_all.transpose(1, 0, 2)
    out = tmp_path / "o.f32"
    subprocess.run([str(mma_main), "attention", str(n), str(n_kv * group), str(n_kv), str(head_dim), str(ctx),
                    str(start), str(window), _write(tmp_path, "q", q), _write(tmp_path, "k", k_cache),
                    _write(tmp_path, "v", v_cache), _write(tmp_path, "s", sinks), str(out)], check=True)
    got = np.fromfile(out, np.float32).reshape(n, -1)
    assert rel_err(got, want) < 2e-3
