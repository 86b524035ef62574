"""The NumPy backend: the ops an adapter's forward pass is made of, on the host.

This is the numerical twin of the CUDA backend; both provide these names with these shapes
(n tokens, H query heads, KVH key/value heads, D head size; arrays are float32):

    name                                   "numpy" | "cuda"
    load_matrix(tensor) -> W               an (out, in) weight from a gguf_file.Tensor, in whatever
                                           form the backend multiplies fastest (here: float32)
    load_embedding(tensor) -> E            the token table (here: kept quantized, rows decoded on lookup)
    load_vector(tensor) -> v               a norm weight or bias (float32)
    new_kv_cache(n_ctx, capacities, KVH, D)
                                           a KVCache serving positions 0..n_ctx-1 whose layer i holds
                                           capacities[i] of them (a ring when fewer: position p at
                                           slot p % capacity, adapter.CacheShape); `nbytes` says its
                                           size, `close()` frees it
    kv_cache_bytes(capacities, KVH, D)     what new_kv_cache would allocate, asked before allocating
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
    load_yarn(yarn, base, D) -> Y          a YaRN (below) in the form rope_attention takes it (the
                                           GPU uploads its frequency table then, at load)
    rope_attention(..., yarn=Y, sinks=(H,), window=w)
                                           gpt-oss: RoPE with YaRN's frequencies and magnitude,
                                           a learned logit per head that joins every softmax
                                           (the "sink", which takes weight but has no value),
                                           and, with window > 0, each query seeing only its own
                                           and the w - 1 previous positions
    load_experts(gate, up, down, gate_b, up_b, down_b) -> X
                                           a mixture of experts: three (E, out, in) stacks and
                                           their (E, out) biases, kept in the file encoding
    route(x (n, d), W_router, b_router, k) -> ids (n, k) int32, weights (n, k)
                                           the k largest of x @ W_router.T + b per token, and a
                                           softmax over those k logits
    expert_ffn(x (n, d), ids, weights, X, residual) -> (n, d)
                                           residual + sum_j weights[:, j] * expert ids[:, j](x),
                                           expert e(x) = down_e(swiglu_oai(gate_e(x), up_e(x)))
                                           with biases; only the routed experts are read
    last_row(x (n, d)) -> (1, d)           the prompt's last token, before the output head (the
                                           GPU's graph of a padded chunk picks it by device state)
    to_host(x) -> np.ndarray               logits back on the host for the sampler
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reference_worker.errors import ErrorCode, WorkerError
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
    """Keys and values of positions 0..n_ctx-1: k[layer] and v[layer] are (KVH, capacity, D),
    position p at slot p % capacity (module doc, new_kv_cache)."""

    def __init__(self, n_ctx: int, capacities: tuple[int, ...], n_head_kv: int, head_dim: int) -> None:
        self.n_ctx = n_ctx
        self.capacities = tuple(capacities)
        try:
            self.k = [np.zeros((n_head_kv, c, head_dim), np.float32) for c in self.capacities]
            self.v = [np.zeros_like(k) for k in self.k]
        except MemoryError:
            raise WorkerError(ErrorCode.VRAM_OOM, f"out of host memory for a KV cache of "
                              f"{kv_cache_bytes(self.capacities, n_head_kv, head_dim)} bytes") from None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.k + self.v)

    def close(self) -> None:
        self.k = self.v = []


def kv_cache_bytes(capacities: tuple[int, ...], n_head_kv: int, head_dim: int) -> int:
    """What new_kv_cache will allocate, so callers can refuse before allocating."""
    return 2 * sum(capacities) * n_head_kv * head_dim * 4


def first_held(capacity: int, start: int, n: int, window: int) -> int:
    """The oldest position queries start..start+n-1 read from a layer of `capacity` slots once
    their own keys are stored; VRAM_OOM when the layer no longer holds it (a full-attention
    layer past its positions, or a chunk too long for a sliding-window layer's ring)."""
    first = max(0, start - window + 1) if window > 0 else 0
    if start + n - capacity > first:
        raise WorkerError(ErrorCode.VRAM_OOM, f"positions {start}..{start + n - 1} with window {window} need "
                          f"{start + n - first} slots of a KV-cache layer that holds {capacity}")
    return first


def load_matrix(tensor: Tensor) -> np.ndarray:
    return dequantize(tensor.raw, tensor.qtype)


def load_embedding(tensor: Tensor) -> QuantizedRows:
    return QuantizedRows(tensor)


def load_vector(tensor: Tensor) -> np.ndarray:
    return dequantize(tensor.raw, tensor.qtype).reshape(-1)


def new_kv_cache(n_ctx: int, capacities: tuple[int, ...], n_head_kv: int, head_dim: int) -> KVCache:
    return KVCache(n_ctx, capacities, n_head_kv, head_dim)


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


@dataclass(frozen=True)
class YaRN:
    """YaRN context extension of RoPE as ggml's rope computes it with llama.cpp's settings for
    a file whose rope.scaling.type is "yarn" (llama-context.cpp: ext_factor 1, and an
    attn_factor that cancels to 1): dimension pair i turns by
    p * theta_i * ((1 - r_i) / factor + r_i), theta_i = base^(-2i/D), where the ramp r_i is 1
    for the fast pairs (i below the correction dimension of beta_fast), 0 for the slow ones (above
    that of beta_slow) and linear between; cos and sin are scaled by 1 + 0.1 ln(factor).
    """

    factor: float  # rope.scaling.factor
    n_ctx_orig: int  # rope.scaling.original_context_length
    beta_fast: float = 32.0
    beta_slow: float = 1.0

    def frequencies(self, base: float, head_dim: int) -> tuple[np.ndarray, float]:
        """(the D/2 angles per position, float64; the magnitude scale of cos and sin)."""
        theta = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)

        def correction_dim(rotations: float) -> float:  # ggml_rope_yarn_corr_dim
            return head_dim * np.log(self.n_ctx_orig / (rotations * 2 * np.pi)) / (2 * np.log(base))

        low = max(0.0, np.floor(correction_dim(self.beta_fast)))
        high = min(head_dim - 1.0, np.ceil(correction_dim(self.beta_slow)))
        ramp = 1 - np.clip((np.arange(head_dim // 2) - low) / max(0.001, high - low), 0, 1)
        return theta * ((1 - ramp) / self.factor + ramp), 1 + 0.1 * np.log(self.factor)


def load_yarn(yarn: YaRN, base: float, head_dim: int) -> YaRN:
    return yarn  # rotate() computes the frequencies as it goes


def rope_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, cache: KVCache, layer: int, start: int,
                   base: float, neox: bool, yarn: YaRN | None = None, sinks: np.ndarray | None = None,
                   window: int = 0) -> np.ndarray:
    q, k = rope(q, k, np.arange(start, start + len(q)), base, neox, yarn)
    return attention(q, k, v, cache, layer, start, sinks, window)


def rope(q: np.ndarray, k: np.ndarray, positions: np.ndarray, base: float, neox: bool,
         yarn: YaRN | None = None) -> tuple[np.ndarray, np.ndarray]:
    return rotate(q, positions, base, neox, yarn), rotate(k, positions, base, neox, yarn)


def rotate(x: np.ndarray, positions: np.ndarray, base: float, neox: bool, yarn: YaRN | None = None) -> np.ndarray:
    """x (n, heads, D) rotated for positions (n,)."""
    head_dim = x.shape[-1]
    if yarn is None:
        inv_freq, magnitude = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim), 1.0
    else:
        inv_freq, magnitude = yarn.frequencies(base, head_dim)
    angles = np.asarray(positions, np.float64)[:, None] * inv_freq  # (n, D/2)
    cos = (np.cos(angles) * magnitude).astype(np.float32)[:, None, :]
    sin = (np.sin(angles) * magnitude).astype(np.float32)[:, None, :]
    if neox:
        x1, x2 = x[..., :head_dim // 2], x[..., head_dim // 2:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return np.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(x.shape)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, cache: KVCache, layer: int, start: int,
              sinks: np.ndarray | None = None, window: int = 0) -> np.ndarray:
    n, n_head, head_dim = q.shape
    n_head_kv = k.shape[1]
    end = start + n
    layer_k, layer_v = cache.k[layer], cache.v[layer]
    capacity = layer_k.shape[1]
    first = first_held(capacity, start, n, window)
    stored = np.arange(start, end) % capacity
    layer_k[:, stored], layer_v[:, stored] = k.transpose(1, 0, 2), v.transpose(1, 0, 2)
    held = slice(first, end) if end <= capacity else np.arange(first, end) % capacity  # positions first..end-1
    keys, values = layer_k[:, held], layer_v[:, held]  # (KVH, L, D)
    group = n_head // n_head_kv
    qg = q.reshape(n, n_head_kv, group, head_dim).transpose(1, 2, 0, 3).reshape(n_head_kv, group * n, head_dim)
    scores = (qg @ keys.transpose(0, 2, 1)) * np.float32(1 / np.sqrt(head_dim))  # (KVH, G*n, L)
    scores = scores.reshape(n_head_kv, group, n, end - first)
    distance = (start + np.arange(n))[:, None] - np.arange(first, end)[None, :]  # query - key position (n, L)
    hidden = (distance < 0) | (distance >= window) if window > 0 else distance < 0  # causal (and window)
    scores[:, :, hidden] = -np.inf
    # A sink is one more logit in every row's softmax, with no value behind it.
    sink = (np.full((n_head_kv, group, n, 1), -np.inf, np.float32) if sinks is None
            else np.broadcast_to(sinks.reshape(n_head_kv, group, 1, 1), (n_head_kv, group, n, 1)))
    top = np.maximum(scores.max(axis=-1, keepdims=True), sink)
    probs = np.exp(scores - top)
    probs /= probs.sum(axis=-1, keepdims=True) + np.exp(sink - top)
    out = probs.reshape(n_head_kv, group * n, end - first) @ values  # (KVH, G*n, D)
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


SWIGLU_OAI_ALPHA = 1.702  # GPT-OSS's activation constants (llama-graph.cpp, LLM_FFN_SWIGLU_OAI_MOE)
SWIGLU_OAI_LIMIT = 7.0


def swiglu_oai(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """GPT-OSS's clamped SwiGLU (ggml_swiglu_oai): g = min(gate, 7), u = clip(up, -7, 7),
    g * sigmoid(1.702 g) * (u + 1)."""
    g = np.minimum(gate, SWIGLU_OAI_LIMIT)
    u = np.clip(up, -SWIGLU_OAI_LIMIT, SWIGLU_OAI_LIMIT)
    return g * (0.5 + 0.5 * np.tanh(0.5 * SWIGLU_OAI_ALPHA * g)) * (u + 1)


class QuantizedExperts:
    """An (E, out, in) stack of expert matrices in its file encoding; `matrix(e)` decodes one."""

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor
        self.n_expert, self.rows, self.cols = tensor.shape

    def matrix(self, e: int) -> np.ndarray:
        return dequantize(self.tensor.raw[e * self.rows:(e + 1) * self.rows], self.tensor.qtype)


@dataclass(frozen=True)
class Experts:
    """A mixture of experts' three stacks and their (E, out) biases."""

    gate: QuantizedExperts
    up: QuantizedExperts
    down: QuantizedExperts
    gate_bias: np.ndarray
    up_bias: np.ndarray
    down_bias: np.ndarray

    @property
    def nbytes(self) -> int:
        """The three stacks' bytes in their file encoding."""
        return sum(stack.tensor.n_bytes for stack in (self.gate, self.up, self.down))


def load_experts(gate: Tensor, up: Tensor, down: Tensor, gate_bias: Tensor, up_bias: Tensor,
                 down_bias: Tensor) -> Experts:
    return Experts(QuantizedExperts(gate), QuantizedExperts(up), QuantizedExperts(down),
                   *(dequantize(b.raw, b.qtype).reshape(b.shape) for b in (gate_bias, up_bias, down_bias)))


def route(x: np.ndarray, w_router: np.ndarray, b_router: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    logits = matmul(x, w_router, bias=b_router)
    ids = np.argsort(-logits, axis=1, kind="stable")[:, :k].astype(np.int32)  # ties: the lower id
    chosen = np.take_along_axis(logits, ids, axis=1)
    weights = np.exp(chosen - chosen[:, :1])
    return ids, weights / weights.sum(axis=1, keepdims=True)


def expert_ffn(x: np.ndarray, ids: np.ndarray, weights: np.ndarray, experts: Experts,
               residual: np.ndarray) -> np.ndarray:
    out = residual.astype(np.float32, copy=True)
    for e in np.unique(ids):  # each routed expert decoded once, for all of its tokens
        tokens, slot = np.nonzero(ids == e)
        h = x[tokens]
        act = swiglu_oai(matmul(h, experts.gate.matrix(e), experts.gate_bias[e]),
                         matmul(h, experts.up.matrix(e), experts.up_bias[e]))
        y = matmul(act, experts.down.matrix(e), experts.down_bias[e])
        np.add.at(out, tokens, weights[tokens, slot][:, None] * y)
    return out


def last_row(x: np.ndarray) -> np.ndarray:
    """x's last row, as (1, cols): the prompt's last token, whose logits pick the next one."""
    return x[-1:]


def to_host(x: np.ndarray) -> np.ndarray:
    return x
