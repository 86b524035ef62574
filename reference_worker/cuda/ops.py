"""The CUDA backend's ops: the names and shapes of ops_numpy.py, on the GPU (arrays are cupy).

`CudaOps(gguf, ...)` puts the whole file into the weight arena when it is made; `load_matrix`
and `load_embedding` then hand out views of the arena that stay in the file's encoding, decoded
only inside the mat-vec and embedding kernels (M0-W-1201). Activations are float32, the KV cache
fp16. Positions travel to the kernels through one device int (`state[0]`), and in capture mode
(`capturing(ids)`) the tokens come from a device buffer (`state[1]` for a decode step), so that
decode.py can record a whole step, or a padded prompt chunk, as a CUDA graph and replay it
without any upload but the state's.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
from dataclasses import dataclass

import cupy as cp
import numpy as np

from reference_worker.cuda import kernels
from reference_worker.cuda.arena import DEFAULT_CHUNK_BYTES, WeightArena, configure_context, is_device_resident, layout
from reference_worker.cuda.kernels import DeviceExperts, DeviceWeight, cuda_errors
from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.gguf_file import GGUFFile, Tensor
from reference_worker.ops_numpy import first_held
from reference_worker.quant import dequantize

log = logging.getLogger(__name__)
SCRATCH_RESERVE_BYTES = 64 << 20  # activations of a 512-token prefill, logits, sampling state


class KVCache:
    """Keys and values of positions 0..n_ctx-1 in fp16, one allocation each: k[layer] and v[layer]
    are views (KVH, capacity, D), position p at slot p % capacity (ops_numpy.new_kv_cache)."""

    def __init__(self, n_ctx: int, capacities: tuple[int, ...], n_head_kv: int, head_dim: int) -> None:
        self.n_ctx = n_ctx
        self.capacities = tuple(capacities)
        per_position = n_head_kv * head_dim
        with cuda_errors("allocating the KV cache"):
            self._k = cp.empty(sum(self.capacities) * per_position, np.float16)
            self._v = cp.empty_like(self._k)
        starts = np.cumsum((0,) + self.capacities) * per_position
        self.k, self.v = ([whole[a:b].reshape(n_head_kv, c, head_dim) for a, b, c in
                           zip(starts[:-1], starts[1:], self.capacities)] for whole in (self._k, self._v))

    @property
    def nbytes(self) -> int:
        return 0 if self._k is None else self._k.nbytes + self._v.nbytes

    def pointers(self) -> list[int]:
        # Each array read once: the residency check runs on another thread than close().
        return [array.data.ptr for array in (self._k, self._v) if array is not None]

    def close(self) -> None:
        self._k = self._v = None
        self.k = self.v = []


def kv_cache_bytes(capacities: tuple[int, ...], n_head_kv: int, head_dim: int) -> int:
    """What new_kv_cache will allocate, so callers can refuse before allocating."""
    return 2 * sum(capacities) * n_head_kv * head_dim * 2


@dataclass(frozen=True)
class DeviceYaRN:
    """RoPE's per-pair angles per position under YaRN (float32, head_dim/2) and the magnitude of
    cos and sin, for the rope and attention_decode kernels."""

    freqs: cp.ndarray
    magnitude: float


@dataclass(frozen=True)
class DeviceRows:
    """The token table in its file encoding; rows are decoded by the embedding kernel."""

    weight: DeviceWeight


class CudaOps:
    """The ops of ops_numpy.py on one GPU, over the weights of one GGUF file."""

    name = "cuda"

    def __init__(self, gguf: GGUFFile, device: int = 0, reserve_bytes: int = SCRATCH_RESERVE_BYTES,
                 vram_budget_bytes: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 on_progress=lambda fraction: None) -> None:
        """Load every tensor of `gguf` into VRAM; `reserve_bytes` (KV cache and scratch) must fit
        beside the weights, else WorkerError(INSUFFICIENT_VRAM)."""
        configure_context(device, layout(gguf)[1] + reserve_bytes, gguf.path)
        kernels.load_modules()
        self.device = device
        self.gguf = gguf
        self.budget_bytes = vram_budget_bytes
        self.pool = cp.get_default_memory_pool()
        self.arena = WeightArena(gguf, device, reserve_bytes, vram_budget_bytes, chunk_bytes, on_progress)
        # (position of the first token, token, history length): read by the kernels, see module doc.
        self.state = cp.zeros(3, np.int32)
        self.attention_tickets = kernels.attention_tickets()  # decode attention's counters, zero between launches
        self.capture_mode = False  # tokens from capture_ids, positions from `state` (see `capturing`)
        self.capture_ids: cp.ndarray | None = None
        self.keep_logits = False  # to_host leaves logits on the device
        self._uploaded_position: int | None = None  # what state[0] holds, when the host knows it
        self._caches: list[KVCache] = []
        self._decoder = None
        self._require_residency("the weight arena or the decode state")

    # -- loading ------------------------------------------------------------------------------
    def _weight(self, tensor: Tensor) -> DeviceWeight:
        whole = self.gguf.tensors[tensor.name]
        rows, row_bytes = tensor.raw.shape
        row_start = (tensor.raw.ctypes.data - whole.raw.ctypes.data) // max(row_bytes, 1)  # row splits (phi3)
        data = self.arena.view(tensor.name, rows, row_bytes, row_start)
        return DeviceWeight(tensor.qtype, rows, tensor.shape[-1], data)

    def load_matrix(self, tensor: Tensor) -> DeviceWeight:
        if len(tensor.shape) != 2:
            raise WorkerError(ErrorCode.MODEL_LOAD_FAILED, f"tensor {tensor.name!r} is not a matrix: {tensor.shape}")
        return self._weight(tensor)

    def load_embedding(self, tensor: Tensor) -> DeviceRows:
        return DeviceRows(self.load_matrix(tensor))

    def load_experts(self, gate: Tensor, up: Tensor, down: Tensor, gate_bias: Tensor, up_bias: Tensor,
                     down_bias: Tensor) -> DeviceExperts:
        """A mixture of experts as views of the arena: the (E, rows, cols) stacks stay in the file
        encoding (MXFP4 for GPT-OSS), decoded only inside moe.cu for the routed experts."""
        n_expert = gate.shape[0]
        try:
            return DeviceExperts(n_expert, self._weight(gate), self._weight(up), self._weight(down),
                                 *(self.load_vector(b).reshape(b.shape) for b in (gate_bias, up_bias, down_bias)))
        except ValueError as e:
            raise WorkerError(ErrorCode.MODEL_LOAD_FAILED, f"{gate.name}: {e}") from e

    def load_yarn(self, yarn, base: float, head_dim: int) -> DeviceYaRN:
        """YaRN's frequency table (ops_numpy.YaRN.frequencies), uploaded at load so that no request
        allocates it (a lasting allocation in the middle of one would fragment the pool)."""
        freqs, magnitude = yarn.frequencies(base, head_dim)
        with cuda_errors("uploading the YaRN frequencies"):
            return DeviceYaRN(cp.asarray(freqs.astype(np.float32)), float(magnitude))

    def load_vector(self, tensor: Tensor) -> cp.ndarray:
        """Norm weights and biases as float32: an F32 vector is a view of the arena; the rare
        other encoding is decoded once (vectors, not weight matrices: M0-W-1201 is about those)."""
        n = int(np.prod(tensor.shape))
        if tensor.qtype == kernels.Q.F32:
            return self.arena.view(tensor.name, 1, tensor.n_bytes).view(np.float32).reshape(n)
        with cuda_errors("loading a vector"):
            return cp.asarray(dequantize(tensor.raw, tensor.qtype).reshape(n))

    def new_kv_cache(self, n_ctx: int, capacities: tuple[int, ...], n_head_kv: int, head_dim: int) -> KVCache:
        """A KV cache; WorkerError(VRAM_OOM) when it would pass the VRAM budget or the device's
        free memory (M0-W-1021), with nothing left allocated. The engine makes one at startup
        (Engine.load turns this error into INSUFFICIENT_VRAM there)."""
        need = kv_cache_bytes(capacities, n_head_kv, head_dim)
        if self.budget_bytes is not None and self.vram_bytes_used + need > self.budget_bytes:
            raise WorkerError(ErrorCode.VRAM_OOM, f"a KV cache of {need} bytes does not fit the VRAM budget "
                              f"({self.vram_bytes_used} of {self.budget_bytes} bytes used)",
                              {"required_bytes": need, "available_bytes": self.budget_bytes - self.vram_bytes_used})
        try:
            cache = KVCache(n_ctx, capacities, n_head_kv, head_dim)
        except WorkerError:
            self.pool.free_all_blocks()
            raise
        self._caches = [c for c in self._caches if c.nbytes] + [cache]  # closed ones (score's) dropped
        self._require_residency("the KV cache")
        return cache

    def kv_cache_bytes(self, capacities: tuple[int, ...], n_head_kv: int, head_dim: int) -> int:
        return kv_cache_bytes(capacities, n_head_kv, head_dim)

    # -- accounting and residency -------------------------------------------------------------
    @property
    def vram_bytes_used(self) -> int:
        """Weights + everything CuPy's pool holds (KV caches, scratch, graph buffers) (M0-W-1011)."""
        graph = self._decoder.nbytes if self._decoder else 0
        return self.arena.nbytes + self.pool.total_bytes() + graph

    def verify_residency(self) -> bool:
        """cudaPointerGetAttributes on the arena, the state and every live KV cache (M0-W-1012)."""
        pointers = [self.arena.memory.ptr, self.state.data.ptr]
        pointers += [p for cache in self._caches for p in cache.pointers()]
        return all(is_device_resident(p) for p in pointers)

    def _require_residency(self, what: str) -> None:
        if not self.verify_residency():
            raise WorkerError(ErrorCode.CUDA_ERROR, f"{what} is not plain device memory (M0-W-1012)")

    @property
    def resident(self) -> bool:
        """True while every allocation passes the residency check (engine.resident, /health)."""
        return self.verify_residency()

    def check_residency(self) -> bool:
        """The periodic check (--residency-check-sec): logs critical when it fails (M0-W-1012).
        It runs on the server's watcher thread, so it makes this ops' device current first."""
        with cp.cuda.Device(self.device):
            ok = self.verify_residency()
        if not ok:
            log.critical("VRAM residency check failed: an allocation is not plain device memory")
        return ok

    @property
    def sm(self) -> int:
        """Compute capability as one number (90 for Hopper)."""
        return int(cp.cuda.Device(self.device).compute_capability)

    @property
    def cuda_runtime_version(self) -> str:
        version = cp.cuda.runtime.runtimeGetVersion()
        return f"{version // 1000}.{version % 1000 // 10}"

    def release_scratch(self) -> None:
        """Give cached but unused pool blocks back to the device (after a failed request)."""
        self.pool.free_all_blocks()

    def close(self) -> None:
        for cache in self._caches:
            cache.close()
        self._caches = []
        self._decoder = None
        self.arena.close()
        self.pool.free_all_blocks()

    # -- the ops ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def logits_on_device(self):
        """Within: to_host returns the device array (decode.py samples on the GPU)."""
        self.keep_logits = True
        try:
            yield
        finally:
            self.keep_logits = False

    @contextlib.contextmanager
    def capturing(self, token_ids: cp.ndarray):
        """Within: tokens come from token_ids (int32 on the device: state[1:2] for a decode step)
        and positions from state[0], nothing is uploaded, logits stay on the device, and
        `last_row` picks the prompt's last token by the state (decode.py records this as a CUDA
        graph)."""
        self.capture_mode, self.capture_ids = True, token_ids
        try:
            with self.logits_on_device():
                yield
        finally:
            self.capture_mode, self.capture_ids = False, None

    def decoder(self, adapter):
        """The DeviceDecoder (decode.py) for adapter's model on these ops, made once."""
        from reference_worker.cuda.decode import DeviceDecoder  # decode.py builds on this module

        if self._decoder is None or self._decoder.adapter is not adapter:
            self._decoder = DeviceDecoder(self, adapter)
        return self._decoder

    def _set_position(self, start: int) -> None:
        """Upload the first position for the kernels, once per forward pass rather than per op."""
        if not self.capture_mode and start != self._uploaded_position:
            self.state[0:1].set(np.array([start], np.int32))
            self._uploaded_position = start

    def set_state(self, position: int, token: int, history_length: int) -> None:
        """Set `state` from the host (decode.py, before sampling a prompt's first token)."""
        self.state.set(np.array([position, token, history_length], np.int32))
        self._uploaded_position = position

    def state_changed_on_device(self) -> None:
        """A decode graph moved state[0]: the next forward pass must upload its position."""
        self._uploaded_position = None

    def embed(self, table: DeviceRows, ids) -> cp.ndarray:
        if self.capture_mode:
            dev_ids = self.capture_ids
        else:
            ids = np.asarray(ids, np.int64).reshape(-1)
            if ids.size and (ids.min() < 0 or ids.max() >= table.weight.rows):
                raise WorkerError(ErrorCode.INVALID_REQUEST, f"token id outside the vocabulary of {table.weight.rows}")
            dev_ids = cp.asarray(ids.astype(np.int32))
        return kernels.embed(table.weight, dev_ids, cp.empty((dev_ids.size, table.weight.cols), np.float32))

    def matmul(self, x: cp.ndarray, w: DeviceWeight, bias: cp.ndarray | None = None,
               residual: cp.ndarray | None = None) -> cp.ndarray:
        x = cp.ascontiguousarray(x)
        residual = None if residual is None else cp.ascontiguousarray(residual)
        return kernels.matmul(w, x, cp.empty((x.shape[0], w.rows), np.float32), bias, residual)

    def rmsnorm(self, x: cp.ndarray, weight: cp.ndarray, eps: float) -> cp.ndarray:
        x = cp.ascontiguousarray(x)
        return kernels.rmsnorm(x, weight, eps, cp.empty_like(x))

    def rope_attention(self, q: cp.ndarray, k: cp.ndarray, v: cp.ndarray, cache: KVCache, layer: int, start: int,
                       base: float, neox: bool, yarn: DeviceYaRN | None = None, sinks: cp.ndarray | None = None,
                       window: int = 0) -> cp.ndarray:
        n = q.shape[0]
        q, k, v = self._attention_inputs(q, k, v, cache, layer, start, window)
        pos0, k_cache, v_cache = self.state[0:1], cache.k[layer], cache.v[layer]
        freqs, magnitude = (None, 1.0) if yarn is None else (yarn.freqs, yarn.magnitude)
        if n == 1 and kernels.supports_decode_attention(q.shape[2]):
            return kernels.attention_decode(q, k, v, k_cache, v_cache, pos0, base, neox, cp.empty_like(q),
                                            self.attention_tickets, sinks, window, freqs, magnitude).reshape(n, -1)
        q, k = kernels.rope(q, pos0, base, neox, cp.empty_like(q), k, cp.empty_like(k), freqs, magnitude)
        kernels.kv_store(k, v, k_cache, v_cache, pos0)
        return kernels.attention(q, k_cache, v_cache, pos0, cp.empty_like(q), sinks, window).reshape(n, -1)

    def route(self, x: cp.ndarray, w_router: DeviceWeight, b_router: cp.ndarray,
              k: int) -> tuple[cp.ndarray, cp.ndarray]:
        """The router on the device: its ids never visit the host (decode is one CUDA graph)."""
        logits = self.matmul(x, w_router, bias=b_router)
        n = logits.shape[0]
        return kernels.moe_topk(logits, k, cp.empty((n, k), np.int32), cp.empty((n, k), np.float32))

    def expert_ffn(self, x: cp.ndarray, ids: cp.ndarray, weights: cp.ndarray, experts: DeviceExperts,
                   residual: cp.ndarray) -> cp.ndarray:
        x, residual = cp.ascontiguousarray(x), cp.ascontiguousarray(residual)
        act = cp.empty((x.shape[0], ids.shape[1], experts.n_ff), np.float32)
        return kernels.moe_ffn(experts, x, ids, weights, residual, act, cp.empty_like(x))

    def attention(self, q: cp.ndarray, k: cp.ndarray, v: cp.ndarray, cache: KVCache, layer: int,
                  start: int) -> cp.ndarray:
        """rope_attention without the rotation (GPT-2), one query or many: store k, v, then attend."""
        q, k, v = self._attention_inputs(q, k, v, cache, layer, start)
        pos0, k_cache, v_cache = self.state[0:1], cache.k[layer], cache.v[layer]
        kernels.kv_store(k, v, k_cache, v_cache, pos0)
        return kernels.attention(q, k_cache, v_cache, pos0, cp.empty_like(q)).reshape(q.shape[0], -1)

    def _attention_inputs(self, q: cp.ndarray, k: cp.ndarray, v: cp.ndarray, cache: KVCache, layer: int,
                          start: int, window: int = 0) -> tuple[cp.ndarray, cp.ndarray, cp.ndarray]:
        """q, k, v made contiguous, and (outside capture mode) start checked against the cache
        and the layer's ring (ops_numpy.first_held) and uploaded as the position of the first token."""
        n = q.shape[0]
        if not self.capture_mode:
            if start + n > cache.n_ctx:
                raise WorkerError(ErrorCode.VRAM_OOM, f"positions up to {start + n} pass the KV cache of {cache.n_ctx}")
            first_held(cache.capacities[layer], start, n, window)
            self._set_position(start)
        return tuple(cp.ascontiguousarray(a) for a in (q, k, v))

    def add_positions(self, x: cp.ndarray, table: DeviceRows, start: int) -> cp.ndarray:
        """x plus the position table's rows start.. (in place: x is the embedding's fresh output)."""
        if not self.capture_mode:
            if start + x.shape[0] > table.weight.rows:
                raise WorkerError(ErrorCode.INVALID_REQUEST, f"positions up to {start + x.shape[0]} pass the "
                                  f"position table of {table.weight.rows}")
            self._set_position(start)
        x = cp.ascontiguousarray(x)
        return kernels.add_positions(table.weight, x, self.state[0:1], x)

    def layernorm(self, x: cp.ndarray, weight: cp.ndarray, bias: cp.ndarray, eps: float) -> cp.ndarray:
        x = cp.ascontiguousarray(x)
        return kernels.layernorm(x, weight, bias, eps, cp.empty_like(x))

    def gelu(self, x: cp.ndarray) -> cp.ndarray:
        x = cp.ascontiguousarray(x)
        return kernels.gelu(x, cp.empty_like(x))

    def rmsnorm_matmuls(self, x: cp.ndarray, weight: cp.ndarray, eps: float,
                        projections: list[tuple[DeviceWeight, cp.ndarray | None]]) -> list[cp.ndarray]:
        x = cp.ascontiguousarray(x)
        weights = [w for w, _ in projections]
        fused = kernels.fuses_norm(weights, x.shape[0])
        h = x if fused else self.rmsnorm(x, weight, eps)
        if fused and kernels.normed_pair(weights):  # q/k/v of two types in one launch
            return kernels.matvec_normed(weights, [b for _, b in projections], x, weight, eps,
                                         [cp.empty((x.shape[0], w.rows), np.float32) for w in weights])
        outs = []  # one launch per run of matrices of one quant type (q, k, v: one to three) where it can
        for _, run in itertools.groupby(projections, key=lambda p: p[0].qtype):
            run_weights, run_biases = zip(*run)
            run_outs = [cp.empty((x.shape[0], w.rows), np.float32) for w in run_weights]
            if fused:
                outs += kernels.matvec_normed(run_weights, run_biases, x, weight, eps, run_outs)
            elif kernels.stacks_on_tensor_cores(run_weights, x.shape[0]):
                outs += kernels.matmul_stacked(run_weights, run_biases, h, run_outs)
            else:
                outs += [kernels.matmul(w, h, out, b) for w, b, out in zip(run_weights, run_biases, run_outs)]
        return outs

    def rmsnorm_gated_ffn(self, x: cp.ndarray, weight: cp.ndarray, eps: float, w_gate: DeviceWeight,
                          w_up: DeviceWeight) -> cp.ndarray:
        x = cp.ascontiguousarray(x)
        out = cp.empty((x.shape[0], w_gate.rows), np.float32)
        if kernels.fuses_gate(w_gate, w_up, x.shape[0]):
            return kernels.matvec_gated(w_gate, w_up, x, weight, eps, out)
        h = self.rmsnorm(x, weight, eps)
        if kernels.gates_on_tensor_cores(w_gate, w_up, x.shape[0]):
            return kernels.matmul_gated(w_gate, w_up, h, out)
        return kernels.swiglu(self.matmul(h, w_gate), self.matmul(h, w_up), out)

    def last_row(self, x: cp.ndarray) -> cp.ndarray:
        """x's last row as (1, cols); in capture mode the row of the prompt's last token, which
        state places (a padded chunk, decode.py)."""
        if self.capture_mode and x.shape[0] > 1:
            return kernels.last_row(cp.ascontiguousarray(x), self.state, cp.empty((1, x.shape[1]), np.float32))
        return x[-1:]

    def to_host(self, x: cp.ndarray):
        if self.keep_logits:
            return x
        with cuda_errors("copying logits to the host"):
            return cp.asnumpy(x)
