"""Thin launchers of the `.cu` kernels beside this file (M0-W-1430/1431).

Each launcher checks shapes, dtypes and contiguity before it launches (a wrong argument is a
bug in the caller, reported as ValueError), launches on the current stream, and never
synchronises, so a sequence of launches can be captured in a CUDA graph; callers synchronise
inside `cuda_errors` (decode.py reads each token that way). CUDA failures at compile, launch or
synchronisation time become WorkerError(CUDA_ERROR) through `cuda_errors`.
Every launcher takes its output buffer (`out`) so the decode step allocates nothing.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cupy as cp
import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q

from reference_worker.errors import ErrorCode, WorkerError

KERNEL_DIR = Path(__file__).parent

# ggml type -> suffix of the matvec_/matmul_/embed_ kernels in matmul.cu.
WEIGHT_KERNELS = {
    Q.F32: "f32", Q.F16: "f16", Q.BF16: "bf16", Q.Q4_0: "q4_0", Q.Q5_0: "q5_0", Q.Q8_0: "q8_0",
    Q.MXFP4: "mxfp4", Q.Q4_K: "q4_k", Q.Q6_K: "q6_k",
}
FEW_TOKENS = 8  # tokens per weight pass in matmul_few_* (matmul.cu)
PREFILL_TILE = 32  # rows and tokens per block of matmul_tiled_* (matmul.cu), 64 threads
# matmul_tiled_* splits its rows into parts (at most PREFILL_MAX_SPLITS, each of at least
# PREFILL_MIN_SPLIT_UNITS 32-value units) until a launch has PREFILL_BLOCKS_PER_SM blocks per SM.
PREFILL_MAX_SPLITS = 4
PREFILL_MIN_SPLIT_UNITS = 8
PREFILL_BLOCKS_PER_SM = 4
SPLIT_ROW_LENGTH = 2048  # rows at least this long get four warps each in a mat-vec (matvec_split_*)
_NULL = np.uint64(0)  # a null pointer argument: an optional input left out
ATTN_THREADS = 256  # attention.cu: ATTN_WARPS * 32
ATTN_CHUNK = 64  # attention.cu: positions per block of attention_split (CHUNK)
MAX_HEAD_DIM = 256  # attention.cu
SAMPLE_THREADS = 1024  # sampling.cu: argmax, sample_pick
SELECT_BLOCKS = 128  # sampling.cu: blocks of sample_select, sample_refine, sample_gather
SELECT_THREADS = 256  # sampling.cu
SAMPLE_SCRATCH_BYTES = 35880  # sampling.cu: sizeof(SampleScratch), checked there by a static_assert
CUDA_ERRORS = (cp.cuda.runtime.CUDARuntimeError, cp.cuda.driver.CUDADriverError,
                cp.cuda.compiler.CompileException, cp.cuda.memory.OutOfMemoryError)


@contextlib.contextmanager
def cuda_errors(what: str):
    """Turn a CUDA failure inside the block into WorkerError naming `what`: VRAM_OOM when the
    device is out of memory, CUDA_ERROR for a failed compile, launch or synchronisation."""
    try:
        yield
    except cp.cuda.memory.OutOfMemoryError as e:
        raise WorkerError(ErrorCode.VRAM_OOM, f"out of VRAM during {what}: {e}") from e
    except CUDA_ERRORS as e:
        raise WorkerError(ErrorCode.CUDA_ERROR, f"CUDA error during {what}: {e}") from e


@functools.cache
def _module(module: str) -> cp.RawModule:
    source = (KERNEL_DIR / f"{module}.cu").read_text()
    return cp.RawModule(code=source, options=("-std=c++17", f"-I{KERNEL_DIR}"))


def load_modules() -> None:
    """Compile and load every kernel module now (at model load), not inside the first request."""
    with cuda_errors("compiling the kernels"):
        for path in sorted(KERNEL_DIR.glob("*.cu")):
            _module(path.stem).compile()


@functools.cache
def _function(module: str, name: str):
    with cuda_errors(f"compiling {module}.cu"):
        return _module(module).get_function(name)


def _launch(module: str, name: str, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
    with cuda_errors(f"kernel {name}"):
        _function(module, name)(grid, block, args, shared_mem=shared_mem)


def _check(array, dtype, shape: tuple, name: str) -> None:
    if not isinstance(array, cp.ndarray):
        raise ValueError(f"{name} must be a cupy array, not {type(array).__name__}")
    if array.dtype != dtype or array.shape != shape or not array.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype).name} array of shape {shape}, "
                         f"got {array.dtype.name} {array.shape}")


@functools.cache
def _sm_count() -> int:
    """Streaming multiprocessors of the current device (the process uses one GPU)."""
    return cp.cuda.Device().attributes["MultiProcessorCount"]


def _blocks(n: int, threads: int) -> int:
    return (n + threads - 1) // threads


@dataclass(frozen=True)
class DeviceWeight:
    """A weight matrix kept in its GGUF encoding in VRAM: `data` holds (rows, row_bytes) bytes."""

    qtype: Q
    rows: int
    cols: int
    data: cp.ndarray  # uint8, (rows, row_bytes), 256-byte aligned (arena.py)

    def __post_init__(self) -> None:
        if self.qtype not in WEIGHT_KERNELS:
            raise WorkerError(ErrorCode.MODEL_LOAD_FAILED, f"no CUDA kernel for weight type {self.qtype.name}")
        block_size, type_size = GGML_QUANT_SIZES[self.qtype]
        if self.cols % 32 or self.cols % block_size:
            raise WorkerError(ErrorCode.MODEL_LOAD_FAILED,
                              f"row length {self.cols} is not a multiple of 32 and of the {self.qtype.name} block")
        _check(self.data, np.uint8, (self.rows, self.row_bytes), "weight data")

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    @property
    def row_bytes(self) -> int:
        block_size, type_size = GGML_QUANT_SIZES[self.qtype]
        return self.cols // block_size * type_size


def matmul(w: DeviceWeight, x: cp.ndarray, out: cp.ndarray, bias: cp.ndarray | None = None,
           residual: cp.ndarray | None = None) -> cp.ndarray:
    """out[t] = W @ x[t] (+ bias) (+ residual[t]) for x (n_tok, cols) float32, out (n_tok, rows)
    float32, bias (rows,), residual like out; one weight pass per token for n_tok == 1, one per
    FEW_TOKENS tokens below PREFILL_TILE tokens, one per PREFILL_TILE tokens from there."""
    n_tok = x.shape[0] if x.ndim == 2 else -1
    _check(x, np.float32, (n_tok, w.cols), "x")
    _check(out, np.float32, (n_tok, w.rows), "out")
    if bias is not None:
        _check(bias, np.float32, (w.rows,), "bias")
    if residual is not None:
        _check(residual, np.float32, (n_tok, w.rows), "residual")
    suffix, row_bytes = WEIGHT_KERNELS[w.qtype], np.int64(w.row_bytes)
    extras = (_NULL if bias is None else bias, _NULL if residual is None else residual)
    sizes = (np.int32(w.cols), np.int32(w.rows))
    args = (w.data, x, out, *extras, *sizes)
    if n_tok >= PREFILL_TILE:
        units, tiles = w.cols // 32, _blocks(w.rows, PREFILL_TILE) * _blocks(n_tok, PREFILL_TILE)
        splits = max(1, min(PREFILL_MAX_SPLITS, units // PREFILL_MIN_SPLIT_UNITS,
                            _blocks(PREFILL_BLOCKS_PER_SM * _sm_count(), tiles)))
        partial = cp.empty((splits, n_tok, w.rows), np.float32) if splits > 1 else None
        grid = (_blocks(w.rows, PREFILL_TILE), _blocks(n_tok, PREFILL_TILE), splits)
        _launch("matmul", f"matmul_tiled_{suffix}", grid, (64,),
                (w.data, x, out, *extras, _NULL if partial is None else partial, np.int32(_blocks(units, splits)),
                 *sizes, np.int32(n_tok), row_bytes))
        if partial is not None:
            _launch("matmul", "sum_splits", (_blocks(out.size, 256),), (256,),
                    (partial, out, *extras, np.int32(splits), np.int32(w.rows), np.int64(out.size)))
    elif n_tok > 1:
        split = w.cols >= SPLIT_ROW_LENGTH  # as the mat-vecs: four warps per long row
        grid = (w.rows if split else _blocks(w.rows, 4), _blocks(n_tok, FEW_TOKENS))
        _launch("matmul", f"matmul_few{'_split' if split else ''}_{suffix}", grid, (128,),
                (*args, np.int32(n_tok), row_bytes))
    elif w.cols >= SPLIT_ROW_LENGTH:
        _launch("matmul", f"matvec_split_{suffix}", (w.rows,), (128,), (*args, row_bytes))
    else:
        _launch("matmul", f"matvec_{suffix}", (_blocks(w.rows, 4),), (128,), (*args, row_bytes))
    return out


def fuses_norm(weights: Sequence[DeviceWeight], n_tok: int) -> bool:
    """Whether one matvec_normed launch per quant type serves these projections of an
    RMS-normalised x: one token, one to three matrices of one row length, rows a warp can take
    (the normalised row lives in shared memory, 4 bytes a value)."""
    return (n_tok == 1 and 1 <= len(weights) <= 3 and weights[0].cols < SPLIT_ROW_LENGTH
            and all(w.cols == weights[0].cols for w in weights))


def matvec_normed(weights: Sequence[DeviceWeight], biases: Sequence[cp.ndarray | None], x: cp.ndarray,
                  norm: cp.ndarray, eps: float, outs: Sequence[cp.ndarray]) -> list[cp.ndarray]:
    """outs[i] = W_i @ h (+ biases[i]) with h = rmsnorm(x, norm, eps), for one token x (1, cols)
    and one to three matrices of one quant type (q, k, v), in one launch; see fuses_norm."""
    if not (fuses_norm(weights, x.shape[0] if x.ndim == 2 else -1) and len({w.qtype for w in weights}) == 1
            and len(biases) == len(outs) == len(weights)):
        raise ValueError("matvec_normed needs one token, one to three weights of one type and row length "
                         f"shorter than {SPLIT_ROW_LENGTH}, and a bias (or None) and an output for each")
    cols = weights[0].cols
    _check(x, np.float32, (1, cols), "x")
    _check(norm, np.float32, (cols,), "norm")
    for i, (w, bias, out) in enumerate(zip(weights, biases, outs)):
        _check(out, np.float32, (1, w.rows), f"out {i}")
        if bias is not None:
            _check(bias, np.float32, (w.rows,), f"bias {i}")
    ends = np.cumsum([w.rows for w in weights])
    unused = 3 - len(weights)  # slots the kernel never reaches: rows end at ends[-1]
    args = ([w.data for w in weights] + [weights[0].data] * unused
            + [_NULL if b is None else b for b in biases] + [_NULL] * unused
            + list(outs) + [outs[0]] * unused)
    n_out = int(ends[-1])
    _launch("matmul", f"matvec_normed_{WEIGHT_KERNELS[weights[0].qtype]}", (_blocks(n_out, 4),), (128,),
            (*args, np.int32(ends[0]), np.int32(ends[min(1, len(ends) - 1)]), x, norm, np.float32(eps),
             np.int32(cols), np.int32(n_out), np.int64(weights[0].row_bytes)), shared_mem=4 * cols)
    return list(outs)


def fuses_gate(w_gate: DeviceWeight, w_up: DeviceWeight, n_tok: int) -> bool:
    """Whether matvec_gated serves this SwiGLU: matrices of one quant type and shape, as fuses_norm."""
    return (fuses_norm((w_gate, w_up), n_tok) and w_gate.qtype == w_up.qtype and w_gate.rows == w_up.rows)


def matvec_gated(w_gate: DeviceWeight, w_up: DeviceWeight, x: cp.ndarray, norm: cp.ndarray, eps: float,
                 out: cp.ndarray) -> cp.ndarray:
    """out = silu(W_gate @ h) * (W_up @ h) with h = rmsnorm(x, norm, eps), for one token x
    (1, cols); see fuses_gate."""
    if not fuses_gate(w_gate, w_up, x.shape[0] if x.ndim == 2 else -1):
        raise ValueError("matvec_gated needs one token and gate and up weights of one type and shape, "
                         f"rows shorter than {SPLIT_ROW_LENGTH}")
    _check(x, np.float32, (1, w_gate.cols), "x")
    _check(norm, np.float32, (w_gate.cols,), "norm")
    _check(out, np.float32, (1, w_gate.rows), "out")
    _launch("matmul", f"matvec_gated_{WEIGHT_KERNELS[w_gate.qtype]}", (_blocks(w_gate.rows, 4),), (128,),
            (w_gate.data, w_up.data, x, norm, np.float32(eps), out, np.int32(w_gate.cols), np.int32(w_gate.rows),
             np.int64(w_gate.row_bytes)), shared_mem=4 * w_gate.cols)
    return out


def embed(table: DeviceWeight, ids: cp.ndarray, out: cp.ndarray) -> cp.ndarray:
    """out[t] = decoded row ids[t] of the table, for ids (n_tok,) int32 on the device (each id is
    clamped to the table: callers validate ids against the vocabulary first)."""
    n_tok = ids.shape[0] if ids.ndim == 1 else -1
    _check(ids, np.int32, (n_tok,), "ids")
    _check(out, np.float32, (n_tok, table.cols), "out")
    _launch("matmul", f"embed_{WEIGHT_KERNELS[table.qtype]}", (_blocks(table.cols // 4, 256), n_tok), (256,),
            (table.data, ids, out, np.int32(table.cols), np.int32(n_tok), np.int32(table.rows),
             np.int64(table.row_bytes)))
    return out


def rmsnorm(x: cp.ndarray, weight: cp.ndarray, eps: float, out: cp.ndarray) -> cp.ndarray:
    """out = x / sqrt(mean(x^2) + eps) * weight, row by row, for x (n_tok, n)."""
    if x.ndim != 2:
        raise ValueError(f"x must be (n_tok, n), got shape {x.shape}")
    _check(x, np.float32, x.shape, "x")
    _check(weight, np.float32, (x.shape[1],), "weight")
    _check(out, np.float32, x.shape, "out")
    _launch("layers", "rmsnorm", (x.shape[0],), (256,), (x, weight, out, np.int32(x.shape[1]), np.float32(eps)))
    return out


def _check_rope_table(freqs: cp.ndarray | None, head_dim: int) -> None:
    if freqs is not None:
        _check(freqs, np.float32, (head_dim // 2,), "freqs")


def rope(q: cp.ndarray, pos0: cp.ndarray, freq_base: float, neox: bool, q_out: cp.ndarray,
         k: cp.ndarray | None = None, k_out: cp.ndarray | None = None, freqs: cp.ndarray | None = None,
         magnitude: float = 1.0) -> cp.ndarray | tuple[cp.ndarray, cp.ndarray]:
    """q_out = q (n_tok, n_heads, head_dim) rotated for positions pos0[0] + t (pos0 a device
    int32[1]; outputs may be the inputs); with k (n_tok, n_kv_heads, head_dim) and k_out, k too,
    in the same launch, and (q_out, k_out) is returned. `neox` pairs i with i + head_dim/2, else
    2i with 2i + 1. With freqs (head_dim/2 float32, ops_numpy.YaRN.frequencies), pair i turns by
    position * freqs[i] instead of position * freq_base^(-2i/head_dim), and cos and sin are
    scaled by magnitude."""
    if q.ndim != 3 or q.shape[2] % 2:
        raise ValueError(f"q must be (n_tok, n_heads, even head_dim), got shape {q.shape}")
    n_tok, n_q, head_dim = q.shape
    _check(q, np.float32, q.shape, "q")
    _check(q_out, np.float32, q.shape, "q_out")
    _check(pos0, np.int32, (1,), "pos0")
    _check_rope_table(freqs, head_dim)
    n_k = 0
    if k is not None:
        n_k = k.shape[1] if k.ndim == 3 else -1
        _check(k, np.float32, (n_tok, n_k, head_dim), "k")
        _check(k_out, np.float32, k.shape, "k_out")
    pairs = n_tok * (n_q + n_k) * head_dim // 2
    _launch("layers", "rope", (_blocks(pairs, 256),), (256,),
            (q, _NULL if k is None else k, q_out, _NULL if k is None else k_out, np.int32(n_tok), np.int32(n_q),
             np.int32(n_k), np.int32(head_dim), pos0, np.float32(freq_base), np.int32(neox),
             _NULL if freqs is None else freqs, np.float32(magnitude)))
    return q_out if k is None else (q_out, k_out)


def _elementwise(name: str, arrays: tuple, out: cp.ndarray, module: str = "layers") -> cp.ndarray:
    for i, a in enumerate(arrays):
        _check(a, np.float32, out.shape, f"{name} input {i}")
    _check(out, np.float32, out.shape, f"{name} out")
    _launch(module, name, (_blocks(out.size, 256),), (256,), (*arrays, out, np.int64(out.size)))
    return out


def swiglu(gate: cp.ndarray, up: cp.ndarray, out: cp.ndarray) -> cp.ndarray:
    """out = silu(gate) * up."""
    return _elementwise("swiglu", (gate, up), out)


def layernorm(x: cp.ndarray, weight: cp.ndarray, bias: cp.ndarray, eps: float, out: cp.ndarray) -> cp.ndarray:
    """out = (x - mean) / sqrt(var + eps) * weight + bias, row by row, for x (n_tok, n) (M0-W-1432)."""
    if x.ndim != 2:
        raise ValueError(f"x must be (n_tok, n), got shape {x.shape}")
    _check(x, np.float32, x.shape, "x")
    _check(weight, np.float32, (x.shape[1],), "weight")
    _check(bias, np.float32, (x.shape[1],), "bias")
    _check(out, np.float32, x.shape, "out")
    _launch("gpt2_layers", "layernorm", (x.shape[0],), (256,),
            (x, weight, bias, out, np.int32(x.shape[1]), np.float32(eps)))
    return out


def gelu(x: cp.ndarray, out: cp.ndarray) -> cp.ndarray:
    """out = GELU(x), the tanh approximation of M0-W-1433 (out may be x)."""
    return _elementwise("gelu", (x,), out, module="gpt2_layers")


def add_positions(table: DeviceWeight, x: cp.ndarray, pos0: cp.ndarray, out: cp.ndarray) -> cp.ndarray:
    """out[t] = x[t] + decoded row pos0[0] + t of the position table, for x (n_tok, cols) float32
    (out may be x; rows past the table are clamped: callers keep positions inside it) (M0-W-1434)."""
    n_tok = x.shape[0] if x.ndim == 2 else -1
    _check(x, np.float32, (n_tok, table.cols), "x")
    _check(out, np.float32, x.shape, "out")
    _check(pos0, np.int32, (1,), "pos0")
    _launch("gpt2_layers", f"add_positions_{WEIGHT_KERNELS[table.qtype]}", (_blocks(table.cols // 4, 256), n_tok),
            (256,), (table.data, x, out, np.int32(table.cols), np.int32(n_tok), np.int32(table.rows),
                     np.int64(table.row_bytes), pos0))
    return out


def kv_store(k: cp.ndarray, v: cp.ndarray, k_cache: cp.ndarray, v_cache: cp.ndarray, pos0: cp.ndarray) -> None:
    """Write k, v (n_tok, n_kv, head_dim) float32 as fp16 into caches (n_kv, ctx, head_dim) at
    positions pos0[0] + t; positions past the cache are dropped (callers check the budget)."""
    if k.ndim != 3 or k_cache.ndim != 3:
        raise ValueError(f"k must be (n_tok, n_kv, head_dim) and the cache (n_kv, ctx, head_dim), "
                         f"got {k.shape} and {k_cache.shape}")
    n_tok, n_kv, head_dim = k.shape
    ctx = k_cache.shape[1]
    for name, a in (("k", k), ("v", v)):
        _check(a, np.float32, (n_tok, n_kv, head_dim), name)
    for name, c in (("k_cache", k_cache), ("v_cache", v_cache)):
        _check(c, np.float16, (n_kv, ctx, head_dim), name)
    _check(pos0, np.int32, (1,), "pos0")
    _launch("layers", "kv_store", (_blocks(k.size, 256),), (256,),
            (k, v, k_cache, v_cache, np.int32(n_tok), np.int32(n_kv), np.int32(head_dim), np.int32(ctx), pos0))


def _check_attention(q: cp.ndarray, k_cache: cp.ndarray, v_cache: cp.ndarray, pos0: cp.ndarray,
                     out: cp.ndarray, sinks: cp.ndarray | None = None,
                     window: int = 0) -> tuple[int, int, int, int, int]:
    if q.ndim != 3 or k_cache.ndim != 3:
        raise ValueError(f"q must be (n_tok, n_head, head_dim) and the cache (n_kv, ctx, head_dim), "
                         f"got {q.shape} and {k_cache.shape}")
    n_tok, n_head, head_dim = q.shape
    n_kv, ctx, _ = k_cache.shape
    if n_head % n_kv or head_dim > MAX_HEAD_DIM:
        raise ValueError(f"{n_head} query heads over {n_kv} KV heads with head_dim {head_dim} is not supported")
    _check(q, np.float32, q.shape, "q")
    for name, c in (("k_cache", k_cache), ("v_cache", v_cache)):
        _check(c, np.float16, (n_kv, ctx, head_dim), name)
    _check(pos0, np.int32, (1,), "pos0")
    _check(out, np.float32, q.shape, "out")
    if sinks is not None:
        _check(sinks, np.float32, (n_head,), "sinks")
    if window < 0:
        raise ValueError(f"window must be >= 0 (0: none), got {window}")
    return n_tok, n_head, head_dim, n_kv, ctx


def attention(q: cp.ndarray, k_cache: cp.ndarray, v_cache: cp.ndarray, pos0: cp.ndarray,
              out: cp.ndarray, sinks: cp.ndarray | None = None, window: int = 0) -> cp.ndarray:
    """Causal GQA: out[t, h] = softmax(q[t, h] . K[:p+1] / sqrt(d)) V[:p+1] with p = pos0[0] + t,
    K and V the fp16 cache rows of head h's KV group (already stored, see kv_store). With a
    window > 0 only positions p - window + 1..p are seen; with sinks (n_head,) float32 each
    head's softmax has the extra term exp(sinks[h]) (ops_numpy.attention)."""
    n_tok, n_head, head_dim, n_kv, ctx = _check_attention(q, k_cache, v_cache, pos0, out, sinks, window)
    _launch("attention", "attention", (n_head, n_tok), (ATTN_THREADS,),
            (q, k_cache, v_cache, out, np.int32(n_head), np.int32(n_kv), np.int32(head_dim), np.int32(ctx), pos0,
             np.float32(1.0 / np.sqrt(head_dim)), _NULL if sinks is None else sinks, np.int32(window)))
    return out


def supports_decode_attention(head_dim: int) -> bool:
    return head_dim % 64 == 0 and head_dim <= MAX_HEAD_DIM


def attention_decode(q: cp.ndarray, k: cp.ndarray, v: cp.ndarray, k_cache: cp.ndarray, v_cache: cp.ndarray,
                     pos0: cp.ndarray, freq_base: float, neox: bool, out: cp.ndarray, sinks: cp.ndarray | None = None,
                     window: int = 0, freqs: cp.ndarray | None = None, magnitude: float = 1.0) -> cp.ndarray:
    """One query per head at position p = pos0[0], q and k not yet rotated: store rope(k), v
    (1, n_kv, head_dim) at p in the caches, then attend with rope(q) over 0..p like `attention`
    (sinks and window as there), the positions split over blocks (attention_split, then
    attention_combine); RoPE as `rope` (freqs and magnitude as there)."""
    n_tok, n_head, head_dim, n_kv, ctx = _check_attention(q, k_cache, v_cache, pos0, out, sinks, window)
    _check_rope_table(freqs, head_dim)
    if n_tok != 1 or not supports_decode_attention(head_dim):
        raise ValueError(f"decode attention takes one token and a head_dim multiple of 64, got {q.shape}")
    for name, a in (("k", k), ("v", v)):
        _check(a, np.float32, (1, n_kv, head_dim), name)
    chunks = _blocks(ctx, ATTN_CHUNK)
    partial = cp.empty((n_head, chunks, head_dim + 2), np.float32)
    _launch("attention", "attention_split", (n_head, chunks), (128,),
            (q, k, v, k_cache, v_cache, partial, np.int32(n_head), np.int32(n_kv), np.int32(head_dim), np.int32(ctx),
             pos0, np.float32(1.0 / np.sqrt(head_dim)), np.float32(freq_base), np.int32(neox), np.int32(window),
             _NULL if freqs is None else freqs, np.float32(magnitude)))
    _launch("attention", "attention_combine", (n_head,), (head_dim,),
            (partial, out, np.int32(head_dim), np.int32(chunks), pos0, _NULL if sinks is None else sinks,
             np.int32(window)))
    return out


MOE_WARPS = 4  # moe.cu: rows per block of moe_gate_up_* and moe_down_*
MAX_EXPERTS = 256  # moe.cu


@dataclass(frozen=True)
class DeviceExperts:
    """A mixture of experts in VRAM: three stacks of n_expert matrices (a DeviceWeight each, its
    rows the experts' rows one expert after another) in their file encoding, and float32 biases
    (n_expert, rows)."""

    n_expert: int
    gate: DeviceWeight
    up: DeviceWeight
    down: DeviceWeight
    gate_bias: cp.ndarray
    up_bias: cp.ndarray
    down_bias: cp.ndarray

    def __post_init__(self) -> None:
        n_ff, n_embd = self.gate.rows // max(self.n_expert, 1), self.gate.cols
        if not (0 < self.n_expert <= MAX_EXPERTS and self.gate.rows == self.up.rows == n_ff * self.n_expert
                and self.gate.qtype == self.up.qtype and self.up.cols == n_embd
                and (self.down.rows, self.down.cols) == (n_embd * self.n_expert, n_ff)):
            raise ValueError(f"expert stacks do not fit together: {self.n_expert} experts, gate {self.gate.rows}x"
                             f"{self.gate.cols}, up {self.up.rows}x{self.up.cols}, down {self.down.rows}x{self.down.cols}")
        for name, bias, rows in (("gate", self.gate_bias, n_ff), ("up", self.up_bias, n_ff),
                                 ("down", self.down_bias, n_embd)):
            _check(bias, np.float32, (self.n_expert, rows), f"{name} bias")

    @property
    def nbytes(self) -> int:
        """The three stacks' bytes in VRAM (their file encoding)."""
        return self.gate.nbytes + self.up.nbytes + self.down.nbytes

    @property
    def n_ff(self) -> int:
        return self.gate.rows // self.n_expert

    @property
    def n_embd(self) -> int:
        return self.gate.cols


def moe_topk(logits: cp.ndarray, k: int, ids: cp.ndarray, weights: cp.ndarray) -> tuple[cp.ndarray, cp.ndarray]:
    """ids[t] = the k largest of logits[t] (n_tok, n_expert) float32, largest first (ties to the
    lower id), as int32; weights[t] = softmax of those k logits (ops_numpy.route)."""
    n_tok, n_expert = logits.shape if logits.ndim == 2 else (-1, -1)
    _check(logits, np.float32, (n_tok, n_expert), "logits")
    if not 0 < k <= n_expert <= MAX_EXPERTS:
        raise ValueError(f"top-{k} of {n_expert} experts: need 0 < k <= experts <= {MAX_EXPERTS}")
    _check(ids, np.int32, (n_tok, k), "ids")
    _check(weights, np.float32, (n_tok, k), "weights")
    _launch("moe", "moe_topk", (_blocks(n_tok, 32),), (32,),
            (logits, ids, weights, np.int32(n_tok), np.int32(n_expert), np.int32(k)))
    return ids, weights


def moe_ffn(experts: DeviceExperts, x: cp.ndarray, ids: cp.ndarray, weights: cp.ndarray, residual: cp.ndarray,
            act: cp.ndarray, out: cp.ndarray) -> cp.ndarray:
    """out[t] = residual[t] + sum_j weights[t, j] * expert ids[t, j](x[t]), an expert being
    down(swiglu_oai(gate x + b, up x + b)) + b (ops_numpy.expert_ffn), x (n_tok, n_embd); act
    (n_tok, k, n_ff) float32 is the scratch between the two launches. Only the routed experts'
    rows are read; ids must lie in 0..n_expert-1 (moe_topk's do)."""
    n_tok, k = ids.shape if ids.ndim == 2 else (-1, -1)
    _check(x, np.float32, (n_tok, experts.n_embd), "x")
    _check(ids, np.int32, (n_tok, k), "ids")
    _check(weights, np.float32, (n_tok, k), "weights")
    _check(residual, np.float32, x.shape, "residual")
    _check(act, np.float32, (n_tok, k, experts.n_ff), "act")
    _check(out, np.float32, x.shape, "out")
    gate, up, down = experts.gate, experts.up, experts.down
    _launch("moe", f"moe_gate_up_{WEIGHT_KERNELS[gate.qtype]}", (_blocks(experts.n_ff, MOE_WARPS), n_tok * k),
            (32 * MOE_WARPS,), (gate.data, up.data, experts.gate_bias, experts.up_bias, x, ids, act,
                                np.int32(experts.n_embd), np.int32(experts.n_ff), np.int32(k), np.int64(gate.row_bytes)))
    _launch("moe", f"moe_down_{WEIGHT_KERNELS[down.qtype]}", (_blocks(experts.n_embd, MOE_WARPS), n_tok),
            (32 * MOE_WARPS,), (down.data, experts.down_bias, act, ids, weights, residual, out, np.int32(experts.n_ff),
                                np.int32(experts.n_embd), np.int32(k), np.int64(down.row_bytes)))
    return out


def commit_token(state: cp.ndarray, history: cp.ndarray) -> None:
    """Append the chosen token state[1] to history (state[2] ids long) and move to the next
    position: state[0] += 1, state[2] += 1 (the last launch of a decode step)."""
    _check(state, np.int32, (3,), "state")
    _check(history, np.int32, (history.size,), "history")
    _launch("sampling", "commit_token", (1,), (1,), (state, history, np.int32(history.size)))


def chunk_ids(history: cp.ndarray, state: cp.ndarray, out: cp.ndarray) -> cp.ndarray:
    """out[t] = history[state[0] + t] for the prompt's positions (below state[2]), 0 past them:
    the ids of a prompt chunk padded to out's length (prefill.cu)."""
    _check(state, np.int32, (3,), "state")
    _check(history, np.int32, (history.size,), "history")
    _check(out, np.int32, (out.size,), "out")
    _launch("prefill", "chunk_ids", (_blocks(out.size, 256),), (256,),
            (history, state, out, np.int32(out.size), np.int32(history.size)))
    return out


def last_row(x: cp.ndarray, state: cp.ndarray, out: cp.ndarray) -> cp.ndarray:
    """out[0] = x[state[2] - 1 - state[0]] (clamped to x's rows): the row of a padded chunk's
    last prompt token, x (n_rows, cols) float32, out (1, cols)."""
    n_rows = x.shape[0] if x.ndim == 2 else -1
    _check(x, np.float32, (n_rows, x.shape[-1]), "x")
    _check(out, np.float32, (1, x.shape[1]), "out")
    _check(state, np.int32, (3,), "state")
    _launch("prefill", "last_row", (min(_blocks(x.shape[1], 256), 64),), (256,),
            (x, state, out, np.int32(n_rows), np.int32(x.shape[1])))
    return out


def prefill_done(state: cp.ndarray) -> None:
    """state[0] = state[2] - 1: the position of the prompt's last token, which seeds the draw."""
    _check(state, np.int32, (3,), "state")
    _launch("prefill", "prefill_done", (1,), (1,), (state,))


def argmax(x: cp.ndarray, out: cp.ndarray) -> cp.ndarray:
    """out[0] = the index of the largest x (the lowest on ties), x a float32 vector."""
    _check(x, np.float32, (x.size,), "x")
    _check(out, np.int32, (1,), "out")
    _launch("sampling", "argmax", (1,), (SAMPLE_THREADS,), (x, np.int32(x.size), out))
    return out


def repetition_penalty(logits: cp.ndarray, history: cp.ndarray, count: cp.ndarray, mask: cp.ndarray,
                       fparams: cp.ndarray) -> None:
    """Penalise (fparams[3]) the logits of the first count[0] ids of history, once per distinct id."""
    n = logits.size
    _check(logits, np.float32, (n,), "logits")
    _check(history, np.int32, (history.size,), "history")
    _check(count, np.int32, (1,), "count")
    _check(mask, np.int32, (n,), "mask")
    _check(fparams, np.float32, (4,), "fparams")
    _launch("sampling", "mark_tokens", (_blocks(history.size, 256),), (256,),
            (history, count, np.int32(history.size), mask, np.int32(n)))
    _launch("sampling", "apply_penalty", (_blocks(n, 256),), (256,), (logits, mask, np.int32(n), fparams))


def sample_scratch() -> cp.ndarray:
    """The zeroed device buffer `sample` works in (sampling.cu, SampleScratch); one per stream of
    draws, kept across them (the kernels leave its histogram and counter zero again)."""
    return cp.zeros(SAMPLE_SCRATCH_BYTES, np.uint8)


def sample(logits: cp.ndarray, fparams: cp.ndarray, iparams: cp.ndarray, state: cp.ndarray,
           scratch: cp.ndarray) -> None:
    """Choose the next token into state[1] (state = position, token, history length; the
    position seeds the draw):
    fparams = (temperature, top_p, min_p, repetition_penalty) float32, iparams = (top_k, seed
    low, seed high) uint32; temperature 0 is argmax. Four launches, none waiting on the host
    (sampling.cu says what each does), so a decode graph can hold them."""
    _check(logits, np.float32, (logits.size,), "logits")
    _check(fparams, np.float32, (4,), "fparams")
    _check(iparams, np.uint32, (3,), "iparams")
    _check(state, np.int32, (3,), "state")
    _check(scratch, np.uint8, (SAMPLE_SCRATCH_BYTES,), "scratch")
    args = (logits, np.int32(logits.size), fparams, iparams, state, scratch)
    for name in ("sample_select", "sample_refine", "sample_gather"):
        _launch("sampling", name, (SELECT_BLOCKS,), (SELECT_THREADS,), args)
    _launch("sampling", "sample_pick", (1,), (SAMPLE_THREADS,), args)
