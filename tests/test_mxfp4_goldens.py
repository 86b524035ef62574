"""MXFP4 numerical-correctness micro-goldens (M0-W-1822): dequantize -> GEMM, and a small
attention whose Q/K/V projections are MXFP4, within 1% of a float64 reference whose weights
gguf's own dequantizer decoded (the oracle: gguf-py's quants.py, not our quant.py or quant.cuh).
On each backend: NumPy here, CUDA (its mat-vec, few-token and tiled kernels) on a GPU."""
from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from reference_worker import ops_numpy
from reference_worker.gguf_file import Tensor
from reference_worker.synthetic import random_mxfp4_blocks

TOLERANCE = 0.01  # M0-W-1822: 1% relative error


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def mxfp4_tensor(name: str, rows: int, cols: int, seed: int) -> Tensor:
    raw = random_mxfp4_blocks(np.random.default_rng(seed), rows, cols, 0.05)
    return Tensor(name, Q.MXFP4, (rows, cols), 0, raw.nbytes, raw)


def oracle(tensor: Tensor) -> np.ndarray:
    return gguf.quants.dequantize(tensor.raw, Q.MXFP4).astype(np.float64).reshape(tensor.shape)


class NumpyBackend:
    name = "numpy"

    def matmul(self, tensor: Tensor, x: np.ndarray) -> np.ndarray:
        return ops_numpy.matmul(x, ops_numpy.load_matrix(tensor))

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        cache = ops_numpy.new_kv_cache(len(q), (len(q),), k.shape[1], k.shape[2])
        return ops_numpy.attention(q, k, v, cache, 0, 0)


class CudaBackend:
    name = "cuda"

    def __init__(self) -> None:
        import cupy as cp

        from reference_worker.cuda import kernels

        self.cp, self.kernels = cp, kernels

    def matmul(self, tensor: Tensor, x: np.ndarray) -> np.ndarray:
        cp, kernels = self.cp, self.kernels
        weight = kernels.DeviceWeight(Q.MXFP4, tensor.shape[0], tensor.shape[1], cp.asarray(tensor.raw))
        return kernels.matmul(weight, cp.asarray(x), cp.empty((len(x), weight.rows), np.float32)).get()

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        cp, kernels = self.cp, self.kernels
        n, n_kv, head_dim = k.shape
        k_cache, v_cache = (cp.zeros((n_kv, n, head_dim), np.float16) for _ in range(2))
        pos0 = cp.asarray([0], np.int32)
        kernels.kv_store(cp.asarray(k), cp.asarray(v), k_cache, v_cache, pos0)
        return kernels.attention(cp.asarray(q), k_cache, v_cache, pos0, cp.empty(q.shape, np.float32)).get().reshape(n, -1)


@pytest.fixture(scope="module", params=["numpy", pytest.param("cuda", marks=pytest.mark.cuda)])
def backend(request):
    if request.param == "cuda":
        from reference_worker.cuda import cuda_unavailable_reason

        if (reason := cuda_unavailable_reason()) is not None:
            pytest.skip(f"CUDA backend unavailable: {reason}")
        return CudaBackend()
    return NumpyBackend()


@pytest.mark.parametrize("n_tok", [1, 5, 48])  # the mat-vec, few-token and tiled GEMM paths on CUDA
@pytest.mark.parametrize("shape", [(64, 2880), (2880, 2880), (300, 96)])
def test_mxfp4_dequantize_then_gemm_is_within_1_percent_of_float(backend, n_tok, shape):
    tensor = mxfp4_tensor("w", *shape, seed=shape[0] + n_tok)
    x = np.random.default_rng(n_tok).standard_normal((n_tok, shape[1])).astype(np.float32)
    want = x.astype(np.float64) @ oracle(tensor).T
    assert rel_err(backend.matmul(tensor, x), want) < TOLERANCE


def reference_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Causal GQA in float64, one query row at a time."""
    n, n_head, head_dim = q.shape
    group = n_head // k.shape[1]
    out = np.zeros((n, n_head, head_dim))
    for t in range(n):
        for h in range(n_head):
            scores = k[:t + 1, h // group] @ q[t, h] / np.sqrt(head_dim)
            probs = np.exp(scores - scores.max())
            out[t, h] = probs / probs.sum() @ v[:t + 1, h // group]
    return out.reshape(n, -1)


def test_small_attention_with_mxfp4_projections_is_within_1_percent_of_float(backend):
    n, n_embd, n_head, n_kv, head_dim = 24, 256, 8, 2, 64
    x = np.random.default_rng(0).standard_normal((n, n_embd)).astype(np.float32)
    weights = {p: mxfp4_tensor(p, rows, n_embd, seed=i)
               for i, (p, rows) in enumerate((("q", n_head * head_dim), ("k", n_kv * head_dim), ("v", n_kv * head_dim)))}
    q, k, v = (backend.matmul(weights[p], x).reshape(n, -1, head_dim) for p in "qkv")
    got = backend.attention(q, k, v)
    fq, fk, fv = ((x.astype(np.float64) @ oracle(weights[p]).T).reshape(n, -1, head_dim) for p in "qkv")
    assert rel_err(got, reference_attention(fq, fk, fv)) < TOLERANCE
