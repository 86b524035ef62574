"""The NumPy backend: the ops an adapter's forward pass is made of, on the host.

This is the numerical twin of the CUDA backend; both provide these names with these shapes
(n tokens, H query heads, KVH key/value heads, D head size; arrays are float32):

    name                                   "numpy" | "cuda"
    load_matrix(tensor) -> W               an (out, in) weight from a gguf_file.Tensor, in whatever
                                           form the backend multiplies fastest (here: float32)
    load_embedding(tensor) -> E            the token table (here: kept quantized, rows decoded on lookup)
    load_vector(tensor) -> v               a norm weight or bias (float32)
    new_kv_cache(n_layer, n_ctx, KVH, D)   a KVCache; `nbytes` says its size, `close()` frees it
    kv_cache_bytes(n_layer, n_ctx, KVH, D) what new_kv_cache would allocate, asked before allocating
    embed(E, ids) -> (n, d)                rows of the token table
    matmul(x (n, in), W, bias=None, residual=None) -> (n, out)
                                           x @ W.T (+ bias) (+ residual): qwen2's q/k/v biases and
                                           the residual connections ride on their projection
    rmsnorm(x (n, d), weight, eps)         x / sqrt(mean(x^2) + eps) * weight
    rmsnorm_matmuls(x, weight, eps, [(W, bias), ...]) -> [(n, out), ...]
                                           matmul(rmsnorm(x), W, bias) for each pair: the q, k and v
                                           projections (one launch on the GPU when decoding)
    rope_attention(q (n, H, D), k (n, KVH, D), v (n, KVH, D), cache, layer, start, base, neox)
                                           -> (n, H * D): `rope` of q and k for positions
                                           start..start+n-1, then `attention` (both below; the GPU
                                           rotates inside its decode attention kernel)
    rmsnorm_gated_ffn(x (n, in), weight, eps, W_gate, W_up) -> (n, ff)
                                           silu(h @ W_gate.T) * (h @ W_up.T) with h = rmsnorm(x):
                                           the SwiGLU gate
    attention(q, k, v, cache, layer, start) -> (n, H * D)
                                           causal attention without rotation (GPT-2: positions
                                           enter as learned embeddings instead)
    add_positions(x (n, d), P, start)      x + rows start..start+n-1 of the position table P
                                           (a load_embedding) (M0-W-1434)
    layernorm(x (n, d), weight, bias, eps) (x - mean) / sqrt(var + eps) * weight + bias (M0-W-1432)
    gelu(x)                                GELU, tanh approximation (M0-W-1433)
    to_host(x) -> np.ndarray               logits back on the host for the sampler
"""
from __future__ import annotations

import numpy as np

from reference_worker.gguf_file import Tensor
from reference_worker.quant import dequantize

name = "numpy"


class QuantizedRows:
    """A token table kept in its file encoding; `rows(ids)` decodes only the rows asked for."""

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor

    def rows(self, ids: np.ndarray) -> np.ndarray:
        return dequantize(self.tensor.raw[ids], self.tensor.qtype)


class KVCache:
    """Keys and values of every layer, laid out (layer, KVH, position, D)."""

    def __init__(self, n_layer: int, n_ctx: int, n_head_kv: int, head_dim: int) -> None:
        self.n_ctx = n_ctx
        self.k = np.zeros((n_layer, n_head_kv, n_ctx, head_dim), np.float32)
        self.v = np.zeros_like(self.k)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def close(self) -> None:
        self.k = self.v = None


def kv_cache_bytes(n_layer: int, n_ctx: int, n_head_kv: int, head_dim: int) -> int:
    """What new_kv_cache will allocate, so callers can refuse before allocating."""
    return 2 * n_layer * n_ctx * n_head_kv * head_dim * 4


def load_matrix(tensor: Tensor) -> np.ndarray:
    return dequantize(tensor.raw, tensor.qtype)


def load_embedding(tensor: Tensor) -> QuantizedRows:
    return QuantizedRows(tensor)


def load_vector(tensor: Tensor) -> np.ndarray:
    return dequantize(tensor.raw, tensor.qtype).reshape(-1)


def new_kv_cache(n_layer: int, n_ctx: int, n_head_kv: int, head_dim: int) -> KVCache:
    return KVCache(n_layer, n_ctx, n_head_kv, head_dim)


def embed(table: QuantizedRows, ids: np.ndarray) -> np.ndarray:
    return table.rows(np.asarray(ids))


def matmul(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None,
           residual: np.ndarray | None = None) -> np.ndarray:
    y = x @ w.T
    if bias is not None:
        y = y + bias
    return y if residual is None else y + residual


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, cache: KVCache, layer: int, start: int,
                   base: float, neox: bool) -> np.ndarray:
    q, k = rope(q, k, np.arange(start, start + len(q)), base, neox)
    return attention(q, k, v, cache, layer, start)


def rope(q: np.ndarray, k: np.ndarray, positions: np.ndarray, base: float, neox: bool) -> tuple[np.ndarray, np.ndarray]:
    return rotate(q, positions, base, neox), rotate(k, positions, base, neox)


def rotate(x: np.ndarray, positions: np.ndarray, base: float, neox: bool) -> np.ndarray:
    """x (n, heads, D) rotated for positions (n,)."""
    head_dim = x.shape[-1]
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.asarray(positions, np.float64)[:, None] * inv_freq  # (n, D/2)
    cos = np.cos(angles).astype(np.float32)[:, None, :]
    sin = np.sin(angles).astype(np.float32)[:, None, :]
    if neox:
        x1, x2 = x[..., :head_dim // 2], x[..., head_dim // 2:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return np.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(x.shape)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, cache: KVCache, layer: int, start: int) -> np.ndarray:
    n, n_head, head_dim = q.shape
    n_head_kv = k.shape[1]
    end = start + n
    cache.k[layer, :, start:end] = k.transpose(1, 0, 2)
    cache.v[layer, :, start:end] = v.transpose(1, 0, 2)
    keys, values = cache.k[layer, :, :end], cache.v[layer, :, :end]  # (KVH, L, D)
    group = n_head // n_head_kv
    qg = q.reshape(n, n_head_kv, group, head_dim).transpose(1, 2, 0, 3).reshape(n_head_kv, group * n, head_dim)
    scores = (qg @ keys.transpose(0, 2, 1)) * np.float32(1 / np.sqrt(head_dim))  # (KVH, G*n, L)
    scores = scores.reshape(n_head_kv, group, n, end)
    future = np.arange(end)[None, :] > (start + np.arange(n))[:, None]  # causal mask (n, L)
    scores[:, :, future] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    out = probs.reshape(n_head_kv, group * n, end) @ values  # (KVH, G*n, D)
    return out.reshape(n_head_kv, group, n, head_dim).transpose(2, 0, 1, 3).reshape(n, n_head * head_dim)


def silu_mul(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    return gate * (0.5 + 0.5 * np.tanh(0.5 * gate)) * up  # sigmoid via tanh: no overflow


def rmsnorm_matmuls(x: np.ndarray, weight: np.ndarray, eps: float,
                    projections: list[tuple[np.ndarray, np.ndarray | None]]) -> list[np.ndarray]:
    h = rmsnorm(x, weight, eps)
    return [matmul(h, w, bias=b) for w, b in projections]


def rmsnorm_gated_ffn(x: np.ndarray, weight: np.ndarray, eps: float, w_gate: np.ndarray,
                      w_up: np.ndarray) -> np.ndarray:
    h = rmsnorm(x, weight, eps)
    return silu_mul(matmul(h, w_gate), matmul(h, w_up))


def add_positions(x: np.ndarray, table: QuantizedRows, start: int) -> np.ndarray:
    return x + table.rows(np.arange(start, start + len(x)))


def layernorm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    centred = x - np.mean(x, axis=-1, keepdims=True)
    return centred / np.sqrt(np.mean(centred * centred, axis=-1, keepdims=True) + eps) * weight + bias


GELU_SCALE = np.float32(np.sqrt(2 / np.pi))
GELU_CUBIC = np.float32(0.044715)


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(GELU_SCALE * (x + GELU_CUBIC * x * x * x)))


def to_host(x: np.ndarray) -> np.ndarray:
    return x
