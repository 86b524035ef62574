"""Thin launchers of the `.cu` kernels beside this file (M0-W-1430/1431).

Each launcher checks shapes, dtypes and contiguity before it launches (a wrong argument is a
bug in the caller, reported as ValueError), launches on the current stream, and never
synchronises, so a sequence of launches can be captured in a CUDA graph; callers synchronise
inside `cuda_errors` (decode.py reads each token that way). CUDA failures at compile, launch or
synchronisation time become WorkerError(CUDA_ERROR) through `cuda_errors`.
Every launcher takes its output buffer (`out`) so the decode step allocates nothing.
Where the GPU (sm_90 and later) and the driver allow it, every kernel recorded into a CUDA graph
is launched with programmatic dependent launch (driver_launch.py): it may start while the kernel
before it still runs, prefetch its weights and wait (common.cuh's wait_for_prerequisites) before
it touches anything else. Launches outside a capture stay CuPy's: there the driver call's Python
packing cost more than the overlap saved (NOTES.md). M0_CUDA_PDL=0 in the environment, or
use_programmatic_launch(False), turns it off.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cupy as cp
import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q

from reference_worker.cuda import driver_launch
from reference_worker.errors import ErrorCode, WorkerError

KERNEL_DIR = Path(__file__).parent

# ggml type -> suffix of the matvec_/matmul_/embed_ kernels in matmul.cu.
WEIGHT_KERNELS = {
    Q.F32: "f32", Q.F16: "f16", Q.BF16: "bf16", Q.Q4_0: "q4_0", Q.Q5_0: "q5_0", Q.Q8_0: "q8_0",
    Q.MXFP4: "mxfp4", Q.Q4_K: "q4_k", Q.Q6_K: "q6_k",
}
FEW_TOKENS = 8  # tokens per weight pass in matmul_few* (matmul.cu)
FEW_ROWS = (4, 2)  # rows per block of matmul_few4_* and matmul_few2_* (matmul.cu), most first
FEW_WARPS_PER_SM = 4  # matmul_few takes fewer rows a block until its warps reach this many per SM
# matmul_few_mma_<type>_<NT> (gemm_mma.cuh): 16 rows and 8 NT tokens a block, its warps dealt the
# rows' units in turn; the launcher gives a block more warps (up to FEW_MMA_MAX_WARPS, at most one
# a unit) until the launch has FEW_MMA_WARPS_PER_SM warps per SM.
FEW_MMA_TILES = (1, 2)
FEW_MMA_ROWS, FEW_MMA_MAX_WARPS, FEW_MMA_WARPS_PER_SM = 16, 16, 32
PREFILL_TILE = 32  # rows and tokens per block of matmul_tiled_* (matmul.cu), 64 threads; prefill from here
MMA_ROWS, MMA_THREADS = 64, 128  # a block of the tensor-core kernels (gemm_mma.cuh)
MMA_TOKENS = (128, 64, 32)  # their token tiles (matmul_mma_<type>_<tokens>), widest first
# Where mma_tokens picks the narrowest tile (32 tokens) for a prompt of more, matmul runs 64-token
# tiles in blocks of MMA_NARROW_ROWS = 32 rows instead (matmul_mma_rows32_*): as many blocks, each
# decoded weight serving twice the tokens (MMA_ROWS: the 32-token tiles).
MMA_NARROW_ROWS = 32
# Rows a block of matmul_gated's 64-token tiles: 32 (matmul_gated_mma_rows32_*: twice the blocks of
# 64 for the same decoding per token) or MMA_ROWS.
GATED_MMA_ROWS = 32
MMA_BLOCKS_PER_SM = 8  # a tensor-core launch whose blocks reach this many per SM runs unsplit
# The prefill kernels: matmul_tiled_* in fp32, matmul_mma_*_<tokens> on tensor cores.
PREFILL_KERNELS = ("tiled", *(f"mma_{tokens}" for tokens in MMA_TOKENS))
# The prefill kernels split their rows into parts (at most PREFILL_MAX_SPLITS, each of at least
# PREFILL_MIN_SPLIT_UNITS 32-value units) until a launch has PREFILL_BLOCKS_PER_SM blocks per SM
# (matmul_tiled) or MMA_BLOCKS_PER_SM (matmul_mma). A block's loop over its units waits on device
# memory at every unit, so a block per SM left the 896-row projections of a 256-token chunk
# latency-bound (the down projection took 250 us, NOTES.md); a few blocks per SM hide that, for
# a round trip of the parts through `partial` and sum_splits' launch.
PREFILL_MAX_SPLITS = 16
PREFILL_MIN_SPLIT_UNITS = 2
PREFILL_BLOCKS_PER_SM = 4
SPLIT_ROW_LENGTH = 2048  # rows at least this long get four warps each in a mat-vec (matvec_split_*)
GATED_WARPS = 8  # rows (a warp each) per block of matvec_gated_* (matmul.cu)
# (q and k's type, v's type) with a matvec_normed2_* kernel (matmul.cu): q/k/v in one launch.
NORMED_PAIRS = {(Q.Q5_0, Q.Q8_0), (Q.Q4_K, Q.Q6_K)}
# Mat-vecs of more rows read x in place (matvec_many_*) rather than copy it into every block of
# four rows (matvec_*): for the output head (151,936 rows) the copies alone would move as many
# bytes as its weights.
MATVEC_STAGED_X_ROWS = 16384
_NULL = np.uint64(0)  # a null pointer argument: an optional input left out
ATTN_THREADS = 256  # attention.cu: ATTN_WARPS * 32
ATTN_CHUNK = 64  # attention.cu: positions per chunk of attention_split (CHUNK)
ATTN_SPLIT_BLOCKS = 1024  # attention_split's blocks over all heads, at most (8 per SM of an H200):
                          # more chunks than that share blocks, whatever the cache's size
ATTN_TICKET_HEADS = 1024  # query heads attention_tickets' counters serve, at most
MAX_HEAD_DIM = 256  # attention.cu
FA_QUERIES, FA_THREADS = 32, 64  # attention.cu: queries and threads per block of attention_mma_*
FA_HEAD_DIMS = (64, 96, 128)  # attention.cu: the head sizes attention_mma_* is built for
FA_MIN_TOKENS = 16  # one warp's queries: fewer go to `attention`
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


@functools.cache
def _function_handle(module: str, name: str) -> int:
    """The CUfunction of a kernel, loaded on the current device (the process uses one GPU)."""
    with cuda_errors(f"compiling {module}.cu"):
        return _function(module, name).kernel.ptr


PDL_ENVIRONMENT = "M0_CUDA_PDL"  # "0": launch without programmatic dependent launch
_PROGRAMMATIC = driver_launch.attributes(driver_launch.ATTRIBUTE_PROGRAMMATIC)
_programmatic: bool | None = None  # whether _launch uses PDL; None until the first launch decides


def use_programmatic_launch(enabled: bool | None = None) -> bool:
    """Launch every kernel from now on with programmatic dependent launch (enabled=True: where
    the GPU and the driver allow it), or without it (False); None: as M0_CUDA_PDL says (on unless
    it is "0"). Returns whether launches use it now. A CUDA graph keeps the launches it was
    recorded with: record it anew (DeviceDecoder.record_graphs) to change its edges."""
    global _programmatic
    if enabled is None:
        enabled = os.environ.get(PDL_ENVIRONMENT, "1") != "0"
    with cuda_errors("checking for programmatic dependent launch"):
        _programmatic = enabled and driver_launch.driver().supports_programmatic_launch(
            int(cp.cuda.Device().compute_capability))
    return _programmatic


@contextlib.contextmanager
def programmatic_launch(enabled: bool):
    """Within: launches use programmatic dependent launch only if enabled and
    use_programmatic_launch allows it (decode.py records its large prefill graphs without it);
    the setting before is restored after."""
    global _programmatic
    if _programmatic is None:
        use_programmatic_launch()
    saved = _programmatic
    _programmatic = bool(saved and enabled)
    try:
        yield
    finally:
        _programmatic = saved


def _launch(module: str, name: str, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
    if _programmatic is None:
        use_programmatic_launch()
    with cuda_errors(f"kernel {name}"):
        stream = cp.cuda.get_current_stream()
        if _programmatic and stream.is_capturing():
            driver_launch.driver().launch(_function_handle(module, name), grid, block, stream.ptr, args,
                                          shared_mem, _PROGRAMMATIC)
        else:
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


def stage_bytes(n: int) -> int:
    """Shared memory that common.cuh's stage_async takes for n bytes (its stage_bytes)."""
    return (n + 31) // 16 * 16


def matvec_shared(row_bytes: int, slots: int, cols: int, x: bool = True, norm: bool = False) -> int:
    """Dynamic shared memory of a decode mat-vec block (matmul.cu): `slots` staged weight rows,
    then x (not for matvec_split), then the norm's weight where it has one."""
    return slots * stage_bytes(row_bytes) + (int(x) + int(norm)) * stage_bytes(4 * cols)


def _launch_matvec(name: str, grid: tuple, args: tuple, shared_mem: int, threads: int = 128) -> None:
    """A decode mat-vec launch, with its staged rows in dynamic shared memory (past 48 KiB only
    once the kernel allows it: long rows of wide types)."""
    if shared_mem > 48 << 10:
        _allow_shared("matmul", name)
    _launch("matmul", name, grid, (threads,), args, shared_mem)


@functools.cache
def _allow_shared(module: str, name: str) -> None:
    """Let a kernel take as much dynamic shared memory as the device gives a block (48 KiB
    unless asked)."""
    with cuda_errors(f"kernel {name}"):
        most = cp.cuda.Device().attributes["MaxSharedMemoryPerBlockOptin"]
        _function(module, name).max_dynamic_shared_size_bytes = most - _function(module, name).shared_size_bytes


def matmul(w: DeviceWeight, x: cp.ndarray, out: cp.ndarray, bias: cp.ndarray | None = None,
           residual: cp.ndarray | None = None, prefill: str | None = None) -> cp.ndarray:
    """out[t] = W @ x[t] (+ bias) (+ residual[t]) for x (n_tok, cols) float32, out (n_tok, rows)
    float32, bias (rows,), residual like out; one weight pass per token for n_tok == 1, one per
    16 tokens below PREFILL_TILE tokens (matmul_few_mma) and from there one per tile of tokens
    of the `prefill` kernel (PREFILL_KERNELS): by default on tensor cores (weights and x rounded
    to fp16, sums in fp32) with the token tile of mma_tokens (where that is the narrowest for a
    longer prompt, 64-token tiles in blocks of MMA_NARROW_ROWS rows); "tiled" keeps fp32 throughout
    (below PREFILL_TILE tokens matmul_few, FEW_TOKENS tokens a weight pass, each token's sum the
    mat-vec's; from there 32-token tiles)."""
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
    if prefill is not None and prefill not in PREFILL_KERNELS:
        raise ValueError(f"prefill kernel {prefill!r} is none of {PREFILL_KERNELS}")
    if n_tok >= PREFILL_TILE and prefill == "tiled":
        _prefill(f"tiled_{suffix}", PREFILL_TILE, PREFILL_TILE, 64, PREFILL_BLOCKS_PER_SM * _sm_count(), w, x, out,
                 extras)
    elif n_tok >= PREFILL_TILE:
        tokens = int(prefill.removeprefix("mma_")) if prefill else mma_tokens(w.rows, n_tok)
        min_blocks = math.ceil(MMA_BLOCKS_PER_SM * _sm_count())
        if prefill is None and tokens == MMA_TOKENS[-1] and n_tok > tokens:
            _prefill(f"mma_rows32_{suffix}_{MMA_TOKENS[1]}", MMA_NARROW_ROWS, MMA_TOKENS[1], MMA_THREADS, min_blocks, w,
                     x, out, extras)
        else:
            _prefill(f"mma_{suffix}_{tokens}", MMA_ROWS, tokens, MMA_THREADS, min_blocks, w, x, out, extras)
    elif n_tok > 1 and prefill != "tiled":
        _few_mma(f"few_mma_{suffix}", w, n_tok, (*args, np.int32(n_tok), row_bytes))
    elif n_tok > 1:
        # Split as the mat-vecs (four warps for rows of SPLIT_ROW_LENGTH+ values, else one), which
        # keeps every token's sum in their order. Each warp reads its tokens' x once for the
        # block's rows, so four rows a block read a quarter of the x that one did (x, not the
        # weights, was most of the traffic); two where four would leave fewer than
        # FEW_WARPS_PER_SM warps per SM (a warp for each of an SM's schedulers): for 8 tokens on 132 SMs,
        # q and o (896 x 896) get 448 one-warp blocks, gate and up (4864 rows) and down (896 rows of
        # 4864, split) four rows a block, 1216 and 896 warps.
        split = w.cols >= SPLIT_ROW_LENGTH
        warps, groups = 4 if split else 1, _blocks(n_tok, FEW_TOKENS)
        rows = next((r for r in FEW_ROWS if _blocks(w.rows, r) * groups * warps >= FEW_WARPS_PER_SM * _sm_count()),
                    FEW_ROWS[-1])
        _launch("matmul", f"matmul_few{rows}{'_split' if split else ''}_{suffix}", (_blocks(w.rows, rows), groups),
                (32 * warps,), (*args, np.int32(n_tok), row_bytes))
    elif w.cols >= SPLIT_ROW_LENGTH:
        _launch_matvec(f"matvec_split_{suffix}", (w.rows,), (*args, row_bytes),
                       matvec_shared(w.row_bytes, 1, w.cols, x=False))
    elif w.rows > MATVEC_STAGED_X_ROWS:
        _launch_matvec(f"matvec_many_{suffix}", (_blocks(w.rows, 4),), (*args, row_bytes),
                       matvec_shared(w.row_bytes, 4, w.cols, x=False))
    else:
        _launch_matvec(f"matvec_{suffix}", (_blocks(w.rows, 4),), (*args, row_bytes),
                       matvec_shared(w.row_bytes, 4, w.cols))
    return out


def few_mma_warps(blocks: int, cols: int) -> int:
    """Warps a block of matmul_few_mma: the fewest (a power of two) that give a launch of `blocks`
    FEW_MMA_WARPS_PER_SM per SM, at most FEW_MMA_MAX_WARPS and one per 32-value unit of a row."""
    warps, most = 1, min(FEW_MMA_MAX_WARPS, cols // 32)
    while warps * 2 <= most and blocks * warps < FEW_MMA_WARPS_PER_SM * _sm_count():
        warps *= 2
    return warps


def _few_mma(kernel: str, w: DeviceWeight, n_tok: int, args: tuple) -> None:
    """matmul_{kernel}_<NT> (matmul_few_mma_* or matmul_gated_few_mma_*) over w's rows and n_tok
    tokens: one n8 tile a block up to 8 tokens, else FEW_MMA_TILES[-1]; warps as few_mma_warps."""
    tiles = FEW_MMA_TILES[0] if n_tok <= 8 * FEW_MMA_TILES[0] else FEW_MMA_TILES[-1]
    grid = (_blocks(w.rows, FEW_MMA_ROWS), _blocks(n_tok, 8 * tiles))
    _launch("matmul", f"matmul_{kernel}_{tiles}", grid, (32 * few_mma_warps(grid[0] * grid[1], w.cols),), args)


def mma_tokens(rows: int, n_tok: int, widths: Sequence[int] = MMA_TOKENS) -> int:
    """The token tile for a tensor-core launch over rows x n_tok: the widest of `widths` whose
    tiles reach MMA_BLOCKS_PER_SM per SM (each decoded weight then serves the most tokens), else the
    narrowest (the most blocks)."""
    for tokens in widths:
        if _blocks(rows, MMA_ROWS) * _blocks(n_tok, tokens) >= MMA_BLOCKS_PER_SM * _sm_count():
            return tokens
    return widths[-1]


def _prefill(kernel: str, tile_rows: int, tile_tokens: int, threads: int, min_blocks: int, w: DeviceWeight,
             x: cp.ndarray, out: cp.ndarray, extras: tuple) -> None:
    """matmul_{kernel} over tiles of tile_rows x tile_tokens, its rows split over blockIdx.z
    when the tiles alone make fewer than min_blocks blocks, the parts then added in order by
    sum_splits (M0-W-1826: no atomics, the same sums every run)."""
    n_tok, units = x.shape[0], w.cols // 32
    splits = _splits(_blocks(w.rows, tile_rows) * _blocks(n_tok, tile_tokens), units, min_blocks)
    partial = cp.empty((splits, n_tok, w.rows), np.float32) if splits > 1 else None
    grid = (_blocks(w.rows, tile_rows), _blocks(n_tok, tile_tokens), splits)
    _launch("matmul", f"matmul_{kernel}", grid, (threads,),
            (w.data, x, out, *extras, _NULL if partial is None else partial, np.int32(_blocks(units, splits)),
             np.int32(w.cols), np.int32(w.rows), np.int32(n_tok), np.int64(w.row_bytes)))
    if partial is not None:
        _launch("matmul", "sum_splits", (_blocks(out.size, 256),), (256,),
                (partial, out, *extras, np.int32(splits), np.int32(w.rows), np.int64(out.size)))


def _splits(tiles: int, units: int, min_blocks: int) -> int:
    """Parts to split a launch of `tiles` blocks over rows of `units` 32-value units into: enough
    for min_blocks blocks, at most PREFILL_MAX_SPLITS, each of PREFILL_MIN_SPLIT_UNITS units or more."""
    return max(1, min(PREFILL_MAX_SPLITS, units // PREFILL_MIN_SPLIT_UNITS, _blocks(min_blocks, tiles)))


def gates_on_tensor_cores(w_gate: DeviceWeight, w_up: DeviceWeight, n_tok: int) -> bool:
    """Whether matmul_gated serves this SwiGLU: a prompt (two tokens or more), gate and up of one
    type and shape."""
    return n_tok >= 2 and (w_gate.qtype, w_gate.rows, w_gate.cols) == (w_up.qtype, w_up.rows, w_up.cols)


def matmul_gated(w_gate: DeviceWeight, w_up: DeviceWeight, x: cp.ndarray, out: cp.ndarray) -> cp.ndarray:
    """out = silu(W_gate @ x[t]) * (W_up @ x[t]) for x (n_tok, cols), in one launch on tensor cores
    (weights and x rounded to fp16, sums in fp32, the SwiGLU as `swiglu`): below PREFILL_TILE
    tokens as matmul_few_mma, from there 64-token tiles (128 would hold twice the accumulators)
    where a prompt fills more than 32, in blocks of GATED_MMA_ROWS rows: each decoded weight serves
    64 tokens (32-token tiles, twice the blocks of 64 rows, took 122 us a 256-token chunk's gate
    and up against 98, NOTES.md), and the rows cannot be split (the SwiGLU needs whole sums), so
    32-row blocks are how it gets more blocks; see gates_on_tensor_cores."""
    n_tok = x.shape[0] if x.ndim == 2 else -1
    if not gates_on_tensor_cores(w_gate, w_up, n_tok):
        raise ValueError("matmul_gated needs two or more tokens and gate and up weights of one type and shape")
    _check(x, np.float32, (n_tok, w_gate.cols), "x")
    _check(out, np.float32, (n_tok, w_gate.rows), "out")
    suffix = WEIGHT_KERNELS[w_gate.qtype]
    args = (w_gate.data, w_up.data, x, out, np.int32(w_gate.cols), np.int32(w_gate.rows), np.int32(n_tok),
            np.int64(w_gate.row_bytes))
    if n_tok < PREFILL_TILE:
        _few_mma(f"gated_few_mma_{suffix}", w_gate, n_tok, args)
        return out
    tokens = MMA_TOKENS[1] if n_tok > MMA_TOKENS[2] else MMA_TOKENS[2]
    rows = GATED_MMA_ROWS if tokens == MMA_TOKENS[1] else MMA_ROWS
    _launch("matmul", f"matmul_gated_mma{'_rows32' if rows == 32 else ''}_{suffix}_{tokens}",
            (_blocks(w_gate.rows, rows), _blocks(n_tok, tokens)), (MMA_THREADS,), args)
    return out


def fuses_norm(weights: Sequence[DeviceWeight], n_tok: int) -> bool:
    """Whether one matvec_normed launch per quant type serves these projections of an
    RMS-normalised x: one token, one to three matrices of one row length, rows a warp can take
    (the normalised row lives in shared memory, 4 bytes a value)."""
    return (n_tok == 1 and 1 <= len(weights) <= 3 and weights[0].cols < SPLIT_ROW_LENGTH
            and all(w.cols == weights[0].cols for w in weights))


def normed_pair(weights: Sequence[DeviceWeight]) -> bool:
    """Whether matvec_normed takes these three matrices in one launch although their types differ:
    the first two of one type, the third of another, a pair in NORMED_PAIRS (Qwen2.5's Q4_K_M
    files: q and k Q5_0, v Q8_0 in half the layers)."""
    return (len(weights) == 3 and weights[0].qtype == weights[1].qtype
            and (weights[0].qtype, weights[2].qtype) in NORMED_PAIRS)


def matvec_normed(weights: Sequence[DeviceWeight], biases: Sequence[cp.ndarray | None], x: cp.ndarray,
                  norm: cp.ndarray, eps: float, outs: Sequence[cp.ndarray]) -> list[cp.ndarray]:
    """outs[i] = W_i @ h (+ biases[i]) with h = rmsnorm(x, norm, eps), for one token x (1, cols)
    and one to three matrices of one quant type (q, k, v), or a normed_pair, in one launch; see
    fuses_norm."""
    if not (fuses_norm(weights, x.shape[0] if x.ndim == 2 else -1)
            and (len({w.qtype for w in weights}) == 1 or normed_pair(weights))
            and len(biases) == len(outs) == len(weights)):
        raise ValueError("matvec_normed needs one token, one to three weights of one type (or a pair of "
                         f"NORMED_PAIRS) and row length shorter than {SPLIT_ROW_LENGTH}, and a bias (or None) "
                         "and an output for each")
    cols = weights[0].cols
    _check(x, np.float32, (1, cols), "x")
    _check(norm, np.float32, (cols,), "norm")
    for i, (w, bias, out) in enumerate(zip(weights, biases, outs)):
        _check(out, np.float32, (1, w.rows), f"out {i}")
        if bias is not None:
            _check(bias, np.float32, (w.rows,), f"bias {i}")
    args, n_out = _stack(weights, biases, outs)
    args += [x, norm, np.float32(eps), np.int32(cols), np.int32(n_out), np.int64(weights[0].row_bytes)]
    name, row_bytes = f"matvec_normed_{WEIGHT_KERNELS[weights[0].qtype]}", weights[0].row_bytes
    if weights[-1].qtype != weights[0].qtype:
        name = f"matvec_normed2_{WEIGHT_KERNELS[weights[0].qtype]}_{WEIGHT_KERNELS[weights[-1].qtype]}"
        args.append(np.int64(weights[-1].row_bytes))
        row_bytes = max(row_bytes, weights[-1].row_bytes)
    _launch_matvec(name, (_blocks(n_out, 4),), tuple(args), matvec_shared(row_bytes, 4, cols, norm=True))
    return list(outs)


def _stack(weights: Sequence[DeviceWeight], biases: Sequence[cp.ndarray | None],
           outs: Sequence[cp.ndarray]) -> tuple[list, int]:
    """The Stack arguments (matmul.cu, gemm_mma.cuh) of one to three matrices stacked by rows:
    three weights, biases and outputs, then the rows where the second and third begin; and the
    stack's rows."""
    ends = np.cumsum([w.rows for w in weights])
    unused = 3 - len(weights)  # slots the kernel never reaches: rows end at ends[-1]
    args = ([w.data for w in weights] + [weights[0].data] * unused
            + [_NULL if b is None else b for b in biases] + [_NULL] * unused
            + list(outs) + [outs[0]] * unused + [np.int32(ends[0]), np.int32(ends[min(1, len(ends) - 1)])])
    return args, int(ends[-1])


def stacks_on_tensor_cores(weights: Sequence[DeviceWeight], n_tok: int) -> bool:
    """Whether one matmul_stacked launch serves these projections of one x: a prompt
    (PREFILL_TILE tokens or more), two or three matrices of one type and row length, all but the
    last of a multiple of MMA_ROWS rows (a block's rows lie in one matrix)."""
    return (n_tok >= PREFILL_TILE and 2 <= len(weights) <= 3 and len({(w.qtype, w.cols) for w in weights}) == 1
            and all(w.rows % MMA_ROWS == 0 for w in weights[:-1]))


def matmul_stacked(weights: Sequence[DeviceWeight], biases: Sequence[cp.ndarray | None], x: cp.ndarray,
                   outs: Sequence[cp.ndarray]) -> list[cp.ndarray]:
    """outs[i] = W_i @ x[t] (+ biases[i]) for x (n_tok, cols) and two or three matrices (q, k, v)
    in one launch on tensor cores (fp16 inputs, fp32 sums, the token tile of mma_tokens, the units
    split as matmul's until the launch has MMA_BLOCKS_PER_SM blocks per SM, the parts then added in
    order by sum_splits_stacked); see stacks_on_tensor_cores."""
    n_tok = x.shape[0] if x.ndim == 2 else -1
    if not (stacks_on_tensor_cores(weights, n_tok) and len(biases) == len(outs) == len(weights)):
        raise ValueError(f"matmul_stacked needs {PREFILL_TILE}+ tokens, two or three weights of one type and row "
                         f"length, all but the last of a multiple of {MMA_ROWS} rows, and a bias (or None) and an "
                         "output for each")
    _check(x, np.float32, (n_tok, weights[0].cols), "x")
    for i, (w, bias, out) in enumerate(zip(weights, biases, outs)):
        _check(out, np.float32, (n_tok, w.rows), f"out {i}")
        if bias is not None:
            _check(bias, np.float32, (w.rows,), f"bias {i}")
    args, n_out = _stack(weights, biases, outs)
    tokens, cols = mma_tokens(n_out, n_tok), weights[0].cols
    splits = _splits(_blocks(n_out, MMA_ROWS) * _blocks(n_tok, tokens), cols // 32,
                     math.ceil(MMA_BLOCKS_PER_SM * _sm_count()))
    partial = cp.empty((splits * n_tok * n_out,), np.float32) if splits > 1 else None
    _launch("matmul", f"matmul_stacked_mma_{WEIGHT_KERNELS[weights[0].qtype]}_{tokens}",
            (_blocks(n_out, MMA_ROWS), _blocks(n_tok, tokens), splits), (MMA_THREADS,),
            (*args, x, _NULL if partial is None else partial, np.int32(_blocks(cols // 32, splits)), np.int32(cols),
             np.int32(n_out), np.int32(n_tok), np.int64(weights[0].row_bytes)))
    if partial is not None:
        _launch("matmul", "sum_splits_stacked", (_blocks(n_tok * n_out, 256),), (256,),
                (partial, *args[3:], np.int32(splits), np.int32(n_out), np.int32(n_tok)))
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
    _launch_matvec(f"matvec_gated_{WEIGHT_KERNELS[w_gate.qtype]}", (_blocks(w_gate.rows, GATED_WARPS),),
                   (w_gate.data, w_up.data, x, norm, np.float32(eps), out, np.int32(w_gate.cols),
                    np.int32(w_gate.rows), np.int64(w_gate.row_bytes)),
                   matvec_shared(w_gate.row_bytes, 2 * GATED_WARPS, w_gate.cols, norm=True), 32 * GATED_WARPS)
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
    positions pos0[0] + t, position p in slot p % ctx (callers check that the cache holds them:
    ops_numpy.first_held)."""
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
              out: cp.ndarray, sinks: cp.ndarray | None = None, window: int = 0,
              tensor_cores: bool = True) -> cp.ndarray:
    """Causal GQA: out[t, h] = softmax(q[t, h] . K[:p+1] / sqrt(d)) V[:p+1] with p = pos0[0] + t,
    K and V the fp16 cache rows of head h's KV group (already stored, see kv_store; position p
    in slot p % ctx). With a window > 0 only positions p - window + 1..p are seen; with sinks
    (n_head,) float32 each head's softmax has the extra term exp(sinks[h]) (ops_numpy.attention).
    From FA_MIN_TOKENS queries with a head size in FA_HEAD_DIMS it runs on tensor cores
    (attention_mma_*: q and the softmax weights rounded to fp16, sums in fp32) unless tensor_cores
    is False."""
    n_tok, n_head, head_dim, n_kv, ctx = _check_attention(q, k_cache, v_cache, pos0, out, sinks, window)
    scale, extras = np.float32(1.0 / np.sqrt(head_dim)), (_NULL if sinks is None else sinks, np.int32(window))
    if tensor_cores and n_tok >= FA_MIN_TOKENS and head_dim in FA_HEAD_DIMS:
        _launch("attention", f"attention_mma_{head_dim}", (n_head, _blocks(n_tok, FA_QUERIES)), (FA_THREADS,),
                (q, k_cache, v_cache, out, np.int32(n_tok), np.int32(n_head), np.int32(n_kv), np.int32(ctx), pos0,
                 scale, *extras))
    else:
        _launch("attention", "attention", (n_head, n_tok), (ATTN_THREADS,),
                (q, k_cache, v_cache, out, np.int32(n_head), np.int32(n_kv), np.int32(head_dim), np.int32(ctx), pos0,
                 scale, *extras))
    return out


def supports_decode_attention(head_dim: int) -> bool:
    return head_dim % 64 == 0 and head_dim <= MAX_HEAD_DIM


def decode_split(n_head: int, span: int) -> int:
    """attention_split's blocks per head for queries that see up to span positions: a chunk each,
    up to ATTN_SPLIT_BLOCKS over all heads (a 131,072-token cache must not launch 2,048 a head)."""
    return max(1, min(_blocks(span, ATTN_CHUNK), ATTN_SPLIT_BLOCKS // n_head))


def attention_tickets() -> cp.ndarray:
    """The zeroed counters attention_decode's blocks draw tickets from (attention.cu's
    attention_split), one per query head; one buffer per stream of decode steps (an engine's),
    kept across them: every launch leaves its counters zero again."""
    return cp.zeros(ATTN_TICKET_HEADS, np.uint32)


def attention_decode(q: cp.ndarray, k: cp.ndarray, v: cp.ndarray, k_cache: cp.ndarray, v_cache: cp.ndarray,
                     pos0: cp.ndarray, freq_base: float, neox: bool, out: cp.ndarray, tickets: cp.ndarray,
                     sinks: cp.ndarray | None = None, window: int = 0, freqs: cp.ndarray | None = None,
                     magnitude: float = 1.0) -> cp.ndarray:
    """One query per head at position p = pos0[0], q and k not yet rotated: store rope(k), v
    (1, n_kv, head_dim) at p in the caches, then attend with rope(q) over 0..p like `attention`
    (sinks and window as there), the positions split over blocks (decode_split says how many)
    whose last to finish per head merges them, counted in `tickets` (attention_tickets); RoPE
    as `rope` (freqs and magnitude as there)."""
    n_tok, n_head, head_dim, n_kv, ctx = _check_attention(q, k_cache, v_cache, pos0, out, sinks, window)
    _check_rope_table(freqs, head_dim)
    if n_tok != 1 or not supports_decode_attention(head_dim):
        raise ValueError(f"decode attention takes one token and a head_dim multiple of 64, got {q.shape}")
    for name, a in (("k", k), ("v", v)):
        _check(a, np.float32, (1, n_kv, head_dim), name)
    if n_head > ATTN_TICKET_HEADS:
        raise ValueError(f"decode attention takes at most {ATTN_TICKET_HEADS} query heads, got {n_head}")
    _check(tickets, np.uint32, (ATTN_TICKET_HEADS,), "tickets")
    chunks = decode_split(n_head, min(ctx, window) if window > 0 else ctx)  # the positions a query sees, at most
    partial = cp.empty((n_head, chunks, head_dim + 2), np.float32)
    stage = 4 * ATTN_CHUNK * head_dim  # a chunk's keys and values, fp16 (attention.cu)
    if stage > 48 << 10:
        _allow_shared("attention", "attention_split")
    _launch("attention", "attention_split", (n_head, chunks), (128,),
            (q, k, v, k_cache, v_cache, partial, out, tickets, np.int32(n_head), np.int32(n_kv), np.int32(head_dim),
             np.int32(ctx), pos0, np.float32(1.0 / np.sqrt(head_dim)), np.float32(freq_base), np.int32(neox),
             np.int32(window), _NULL if freqs is None else freqs, np.float32(magnitude),
             _NULL if sinks is None else sinks), stage)
    return out


MOE_WARPS = 4  # moe.cu: rows per block of moe_gate_up_* and moe_down_*
MOE_TILE = 32  # moe.cu: pairs per block of moe_tiled_* and moe_mma_*, and rows of moe_tiled_*
MOE_TILE_THREADS = 64  # moe.cu
MOE_MMA_ROWS = 64  # moe.cu: rows per block of moe_mma_*
MOE_MMA_THREADS = 128  # moe.cu
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


def moe_grouped(n_tok: int, k: int, n_expert: int) -> bool:
    """Whether moe_ffn takes the grouped path: when the (token, slot) pairs are at least twice the
    experts, so that each expert's decoded weights serve two pairs or more on average (prefill);
    else the per-token path, which reads each pair's expert at mat-vec speed (decode)."""
    return n_tok * k >= 2 * n_expert


def _check_moe(experts: DeviceExperts, x: cp.ndarray, ids: cp.ndarray, weights: cp.ndarray, residual: cp.ndarray,
               act: cp.ndarray, out: cp.ndarray) -> tuple[int, int]:
    n_tok, k = ids.shape if ids.ndim == 2 else (-1, -1)
    _check(x, np.float32, (n_tok, experts.n_embd), "x")
    _check(ids, np.int32, (n_tok, k), "ids")
    _check(weights, np.float32, (n_tok, k), "weights")
    _check(residual, np.float32, x.shape, "residual")
    _check(act, np.float32, (n_tok, k, experts.n_ff), "act")
    _check(out, np.float32, x.shape, "out")
    return n_tok, k


def moe_ffn(experts: DeviceExperts, x: cp.ndarray, ids: cp.ndarray, weights: cp.ndarray, residual: cp.ndarray,
            act: cp.ndarray, out: cp.ndarray) -> cp.ndarray:
    """out[t] = residual[t] + sum_j weights[t, j] * expert ids[t, j](x[t]), an expert being
    down(swiglu_oai(gate x + b, up x + b)) + b (ops_numpy.expert_ffn), x (n_tok, n_embd); act
    (n_tok, k, n_ff) float32 is the scratch between the launches. Only the routed experts'
    rows are read; ids must lie in 0..n_expert-1 (moe_topk's do). The grouped path or the
    per-token one, as moe_grouped says; neither waits on the host."""
    n_tok, k = ids.shape if ids.ndim == 2 else (-1, -1)
    path = moe_ffn_grouped if moe_grouped(n_tok, k, experts.n_expert) else moe_ffn_per_token
    return path(experts, x, ids, weights, residual, act, out)


def moe_ffn_per_token(experts: DeviceExperts, x: cp.ndarray, ids: cp.ndarray, weights: cp.ndarray,
                      residual: cp.ndarray, act: cp.ndarray, out: cp.ndarray) -> cp.ndarray:
    """moe_ffn with each (token, slot) pair reading its expert's rows (moe_gate_up_*, moe_down_*):
    two launches, the weights read once per pair."""
    n_tok, k = _check_moe(experts, x, ids, weights, residual, act, out)
    gate, up, down = experts.gate, experts.up, experts.down
    _launch("moe", f"moe_gate_up_{WEIGHT_KERNELS[gate.qtype]}", (_blocks(experts.n_ff, MOE_WARPS), n_tok * k),
            (32 * MOE_WARPS,), (gate.data, up.data, experts.gate_bias, experts.up_bias, x, ids, act,
                                np.int32(experts.n_embd), np.int32(experts.n_ff), np.int32(k), np.int64(gate.row_bytes)))
    _launch("moe", f"moe_down_{WEIGHT_KERNELS[down.qtype]}", (_blocks(experts.n_embd, MOE_WARPS), n_tok),
            (32 * MOE_WARPS,), (down.data, experts.down_bias, act, ids, weights, residual, out, np.int32(experts.n_ff),
                                np.int32(experts.n_embd), np.int32(k), np.int64(down.row_bytes)))
    return out


def moe_ffn_grouped(experts: DeviceExperts, x: cp.ndarray, ids: cp.ndarray, weights: cp.ndarray,
                    residual: cp.ndarray, act: cp.ndarray, out: cp.ndarray,
                    tensor_cores: bool = True) -> cp.ndarray:
    """moe_ffn with the pairs grouped by expert on the device (moe_group), each expert's weights
    decoded once per tile of MOE_TILE of its pairs (gate/up, then down), and each token's k
    expert outputs added in slot order (moe_combine): four launches, the grid of the tiled ones
    sized for the most tiles the pairs can make (the rest leave at once). The tiles multiply on
    tensor cores (moe_mma_*: bf16 hi + lo pairs, fp32 sums, the fp32 kernels' precision) or,
    with tensor_cores=False, in fp32 (moe_tiled_*). Its sort and per-pair scratch is allocated
    here, as matmul's split sums are (prefill; the decode step takes the per-token path)."""
    n_tok, k = _check_moe(experts, x, ids, weights, residual, act, out)
    n_pairs, n_ff, n_embd = n_tok * k, experts.n_ff, experts.n_embd
    # sum over experts of ceil(pairs / MOE_TILE), at most min(n_expert, n_pairs) of them non-empty
    max_tiles = (n_pairs + min(experts.n_expert, n_pairs) * (MOE_TILE - 1)) // MOE_TILE
    order, tiles, n_tiles = cp.empty(n_pairs, np.int32), cp.empty(3 * max_tiles, np.int32), cp.empty(1, np.int32)
    y = cp.empty((n_pairs, n_embd), np.float32)  # each pair's expert output, before the weighted sum
    _launch("moe", "moe_group", (1,), (32,),
            (ids, np.int32(n_pairs), np.int32(experts.n_expert), order, tiles, n_tiles))
    kind, rows, threads = (("mma", MOE_MMA_ROWS, MOE_MMA_THREADS) if tensor_cores
                           else ("tiled", MOE_TILE, MOE_TILE_THREADS))
    gate, up, down = experts.gate, experts.up, experts.down
    _launch("moe", f"moe_{kind}_gate_up_{WEIGHT_KERNELS[gate.qtype]}", (_blocks(n_ff, rows), max_tiles), (threads,),
            (gate.data, up.data, experts.gate_bias, experts.up_bias, x, order, tiles, n_tiles, act, np.int32(k),
             np.int32(n_embd), np.int32(n_ff), np.int64(gate.row_bytes)))
    _launch("moe", f"moe_{kind}_down_{WEIGHT_KERNELS[down.qtype]}", (_blocks(n_embd, rows), max_tiles), (threads,),
            (down.data, experts.down_bias, act, order, tiles, n_tiles, y, np.int32(n_ff), np.int32(n_embd),
             np.int64(down.row_bytes)))
    _launch("moe", "moe_combine", (_blocks(out.size, 256),), (256,),
            (y, weights, residual, out, np.int32(k), np.int32(n_embd), np.int64(out.size)))
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


def chunk_done(state: cp.ndarray, n_rows: int) -> None:
    """state[0] += n_rows: past a whole chunk of the prompt, to the next one's first position."""
    _check(state, np.int32, (3,), "state")
    _launch("prefill", "chunk_done", (1,), (1,), (state, np.int32(n_rows)))


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
