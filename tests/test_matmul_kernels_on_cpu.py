"""matmul.cu's matmul_few kernels (prefill of 2..31 tokens: a block per 2 or 4 rows, of one warp or,
split, four) run on the CPU (tests/cuda_on_cpu: each CUDA thread a fiber) as kernels.matmul
launches them, on random valid blocks of Q4_K, Q6_K, Q8_0, Q4_0 and MXFP4 rows (synthetic.py's
encode_weight), 1..31 tokens (the last group of FEW_TOKENS partial), row counts that are not a
multiple of the rows a block takes, with and without bias and residual. Two checks:

- y equals, bit for bit, the decode mat-vec (matvec_* / matvec_split_*, one token at a time):
  matmul_few keeps the mat-vec's order of summation for every token's sum (the lanes' units in
  order, the warp's butterfly, the split warps' parts in order), whatever the rows a block takes.
  (g++ here emits no FMAs; on the GPU both kernels' sums are the same expressions, for nvcc to
  contract alike.)
- y lies within fp32_sums.product_bound of the float64 product of gguf.quants.dequantize's weights
  and x: the kernel sums fp32 products in fp32, so each element is within gamma_k (k = the row
  length, u = 2^-24) of sum |w| |x|, with one more rounding for each of bias and residual;
  product_bound allows 2.02 k u (its doubled u), which also covers the kernel's decode of a
  weight differing from gguf's by an fp32 rounding or two. The bound is elementwise and fixed
  before any run; the errors seen are far inside it (~1e-3 of it, a relative error norm ~1e-7).

The decode mat-vecs that give a 32-value unit four lanes (decode_pair) instead of eight are
checked below on their own: their decoded weights bit for bit decode4's, their sums against
float64 within bounds of the same kind (their order of summation is not the mat-vec's).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from hypothesis import example, given, settings
from hypothesis import strategies as st

import cpu_emulation
from fp32_sums import U, assert_within, product_bound, swiglu_bound
from reference_worker.synthetic import encode_weight

pytestmark = pytest.mark.slow
TYPES = [Q.Q4_K, Q.Q6_K, Q.Q8_0, Q.Q4_0, Q.MXFP4]
KERNELS = ["few2", "few4", "few2_split", "few4_split"]  # matmul_<kernel>_<type>
SPLIT_ROW_LENGTH = 2048  # kernels.py: rows at least this long go to the split kernels


@pytest.fixture(scope="module")
def matmul_main(tmp_path_factory) -> Path:
    return cpu_emulation.build(tmp_path_factory, "matmul_main")


def run(binary: Path, tmp: Path, kernel: str, qtype: Q, raw: np.ndarray, x: np.ndarray, bias, residual) -> np.ndarray:
    """y (n_tok, rows) from matmul_main (its header says what it runs)."""
    files = {}
    for name, array in (("w", raw), ("x", x), ("bias", bias), ("residual", residual)):
        files[name] = "-"
        if array is not None:
            files[name] = str(tmp / f"{name}.bin")
            np.ascontiguousarray(array).tofile(files[name])
    rows, row_bytes = raw.shape
    n_tok, cols = x.shape
    subprocess.run([str(binary), kernel, str(int(qtype)), str(rows), str(cols), str(row_bytes), str(n_tok),
                    files["w"], files["x"], files["bias"], files["residual"], str(tmp / "y.bin")],
                   check=True, capture_output=True, timeout=120)
    return np.fromfile(tmp / "y.bin", np.float32).reshape(n_tok, rows)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=4, deadline=None)
@given(n_tok=st.integers(1, 31), rows=st.integers(1, 21), units=st.integers(1, 28), with_bias=st.booleans(),
       with_residual=st.booleans(), seed=st.integers(0, 2**32 - 1))
@example(n_tok=31, rows=13, units=28, with_bias=True, with_residual=True, seed=1)  # 4 token groups, 13 rows
@example(n_tok=7, rows=1, units=1, with_bias=False, with_residual=False, seed=2)  # one row, one unit (or superblock)
@example(n_tok=8, rows=6, units=3, with_bias=True, with_residual=False, seed=3)
def test_matmul_few_sums_as_the_mat_vec_and_matches_gguf(matmul_main, tmp_path_factory, qtype, kernel, n_tok, rows,
                                                         units, with_bias, with_residual, seed):
    """Rows of 32 units x 32 values and fewer (the split kernels: SPLIT_ROW_LENGTH and more), a
    K-quant's rounded up to whole 256-value super-blocks."""
    split = kernel.endswith("_split")
    cols = 32 * units + (SPLIT_ROW_LENGTH - 32 if split else 0)
    block_size = gguf.GGML_QUANT_SIZES[qtype][0]
    cols = -(-cols // block_size) * block_size
    rng = np.random.default_rng(seed)
    raw = np.ascontiguousarray(encode_weight(rng, qtype, rows, cols, 0.05)).view(np.uint8).reshape(rows, -1)
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32) if with_bias else None
    residual = rng.standard_normal((n_tok, rows)).astype(np.float32) if with_residual else None
    tmp = tmp_path_factory.mktemp("matmul_io")

    y = run(matmul_main, tmp, kernel, qtype, raw, x, bias, residual)
    mat_vec = run(matmul_main, tmp, "vec_split" if split else "vec", qtype, raw, x, bias, residual)
    assert np.isfinite(y).all()
    assert np.array_equal(y.view(np.uint32), mat_vec.view(np.uint32))

    w = gguf.quants.dequantize(raw, qtype).astype(np.float64).reshape(rows, cols)
    want = x.astype(np.float64) @ w.T
    want += (0.0 if bias is None else bias) + (0.0 if residual is None else residual)
    assert_within(y, want, product_bound(x.astype(np.float64), w, bias, residual))


# The decode mat-vecs that give a unit four lanes (matmul.cu's PAIRS: unit_dot's PAIRED), run by
# cuda_on_cpu/matvec_main.cpp.
PAIRED = [Q.Q5_0, Q.Q8_0]
GATED_TYPES = [Q.Q5_0, Q.Q8_0, Q.Q4_0, Q.Q4_K, Q.Q6_K]


@pytest.fixture(scope="module")
def matvec_main(tmp_path_factory) -> Path:
    return cpu_emulation.build(tmp_path_factory, "matvec_main")


def run_matvec(binary: Path, tmp: Path, mode: str, qtype: Q, raw: np.ndarray, cols: int, *inputs) -> np.ndarray:
    """What matvec_main writes (its header says what MODE runs), as float32."""
    rows, row_bytes = raw.shape
    (tmp / "in.bin").write_bytes(b"".join(np.ascontiguousarray(a).tobytes() for a in (raw, *inputs)))
    subprocess.run([str(binary), mode, str(int(qtype)), str(rows), str(cols), str(row_bytes), str(tmp / "in.bin"),
                    str(tmp / "out.bin")], check=True, capture_output=True, timeout=120)
    return np.fromfile(tmp / "out.bin", np.float32)


def random_blocks(rng: np.random.Generator, qtype: Q, rows: int, cols: int) -> np.ndarray:
    """Rows of blocks whose every byte is random but the fp16 scale at each block's start, which is
    a finite one: every bit pattern of the quants and high bits."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (rows, cols // block_size, type_size), np.uint8)
    blocks[:, :, :2] = (rng.standard_normal(blocks.shape[:2]) * 0.05).astype(np.float16)[..., None].view(np.uint8)
    return blocks.reshape(rows, -1)


@pytest.mark.parametrize("qtype", PAIRED, ids=lambda q: q.name)
@settings(max_examples=4, deadline=None)
@given(rows=st.integers(1, 4), units=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_decode_pair_is_decode4_of_both_groups(matvec_main, tmp_path_factory, qtype, rows, units, seed):
    """decode_pair(u, g) is (decode4(u, g), decode4(u, g ^ 4)) for random blocks, of both signs of
    scale: the paired mat-vecs multiply the very weights the others do, bit for bit but that a zero
    weight is +0 where decode4 gives -0 (quant.cuh's scaled_bytes)."""
    raw = random_blocks(np.random.default_rng(seed), qtype, rows, 32 * units)
    got = run_matvec(matvec_main, tmp_path_factory.mktemp("pairs"), "pairs", qtype, raw, 32 * units)
    pair, single = got.reshape(-1, 2, 8)[:, 0], got.reshape(-1, 2, 8)[:, 1]
    assert np.isfinite(got).all()
    assert np.array_equal(pair, single)
    nonzero = single != 0
    assert np.array_equal(pair[nonzero].view(np.uint32), single[nonzero].view(np.uint32))
    assert (pair[~nonzero].view(np.uint32) == 0).all()  # +0


@pytest.mark.parametrize("qtype", GATED_TYPES, ids=lambda q: q.name)
@settings(max_examples=4, deadline=None)
@given(rows=st.integers(1, 21), units=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
@example(rows=19, units=28, seed=1)  # Qwen2.5-0.5B's rows of 896: 3.5 steps of eight units; a partial last block
def test_matvec_gated_within_fp32_sum_bounds_of_the_float64_swiglu(matvec_main, tmp_path_factory, qtype, rows, units,
                                                                  seed):
    """matvec_gated against silu(Wg h) (Wu h) in float64, h = rmsnorm(x) * norm, the weights
    gguf.quants.dequantize's. The paired types (PAIRED) sum their products in another order than
    the others, so the check is a bound, not bits: each of the two sums is within
    product_bound(h, w) (fp32 sums in any order, a decode rounding or two; the matmul_few test's
    bound) plus what the kernel's fp32 h costs, (k / 2 + 6) U sum |w| |h| (the sum of squares'
    relative error within k U, halved by the square root, then the mean, eps, sqrt, division and
    two products: a rounding each); swiglu_bound carries both to the output."""
    block_size = gguf.GGML_QUANT_SIZES[qtype][0]
    cols = -(-32 * units // block_size) * block_size
    rng = np.random.default_rng(seed)
    raw_gate, raw_up = (np.ascontiguousarray(encode_weight(rng, qtype, rows, cols, 0.05)).view(np.uint8)
                        .reshape(rows, -1) for _ in range(2))
    x = rng.standard_normal(cols).astype(np.float32)
    norm = (1.0 + 0.2 * rng.standard_normal(cols)).astype(np.float32)
    eps = np.float32(1e-6)
    y = run_matvec(matvec_main, tmp_path_factory.mktemp("gated"), "gated", qtype, raw_gate, cols, raw_up, x, norm,
                   eps)

    x64 = x.astype(np.float64)
    h = x64 / np.sqrt(np.mean(x64 * x64) + float(eps)) * norm
    sums, bounds = [], []
    for raw in (raw_gate, raw_up):
        w = gguf.quants.dequantize(raw, qtype).astype(np.float64).reshape(rows, cols)
        sums.append(w @ h)
        bounds.append(product_bound(h[None], w)[0] + (cols / 2 + 6) * U * (np.abs(w) @ np.abs(h)))
    gate, up = sums
    assert np.isfinite(y).all()
    assert_within(y, gate / (1.0 + np.exp(-gate)) * up, swiglu_bound(gate, up, *bounds))


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q5_0, Q.Q4_K], ids=lambda q: q.name)
@settings(max_examples=4, deadline=None)
@given(rows=st.integers(1, 21), units=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
@example(rows=13, units=28, seed=1)  # the output head's rows of 896: 3.5 steps of eight units; a partial last block
def test_matvec_many_within_fp32_sum_bounds_of_the_float64_product(matvec_main, tmp_path_factory, qtype, rows, units,
                                                                  seed):
    """matvec_many (the output head's mat-vec, x read in place) against W x + bias + residual in
    float64, W gguf.quants.dequantize's: within product_bound (fp32 sums in any order, a decode
    rounding or two, a rounding each for bias and residual), the paired types' order of summation
    being their own."""
    block_size = gguf.GGML_QUANT_SIZES[qtype][0]
    cols = -(-32 * units // block_size) * block_size
    rng = np.random.default_rng(seed)
    raw = np.ascontiguousarray(encode_weight(rng, qtype, rows, cols, 0.05)).view(np.uint8).reshape(rows, -1)
    x = rng.standard_normal(cols).astype(np.float32)
    bias, residual = rng.standard_normal((2, rows)).astype(np.float32)
    y = run_matvec(matvec_main, tmp_path_factory.mktemp("many"), "many", qtype, raw, cols, x, bias, residual)

    w = gguf.quants.dequantize(raw, qtype).astype(np.float64).reshape(rows, cols)
    want = w @ x.astype(np.float64) + bias + residual
    assert np.isfinite(y).all()
    assert_within(y[None], want[None], product_bound(x.astype(np.float64)[None], w, bias[None], residual[None]))
