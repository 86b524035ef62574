"""Device memory of the CUDA backend: the weight arena, VRAM accounting and residency checks.

M0-W-1220/1221/1222: every tensor of the GGUF file goes into one plain device allocation
(cudaMalloc through cupy.cuda.Memory; no managed or host-mapped memory anywhere), at a
256-byte-aligned offset, copied straight from the file's memory map in bounded chunks, so the
host never holds a second copy of the model. Weights keep their file encoding in VRAM.

M0-W-1010 as far as CuPy exposes CUDA:
- cudaDeviceSetLimit(cudaLimitMallocHeapSize, 0): done (cupy.cuda.runtime.deviceSetLimit); it
  caps the in-kernel malloc heap, which no kernel here uses.
- cudaDeviceSetCacheConfig(cudaFuncCachePreferL1): CuPy has no binding for it; on Hopper the
  L1/shared split is chosen per kernel by the driver anyway.
- "Disable Unified Memory": CUDA has no switch for that; instead nothing here allocates managed
  memory (CuPy's pool calls cudaMalloc unless told otherwise, which `configure_context` checks),
  and every allocation is checked with cudaPointerGetAttributes (below).
"""
from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

import cupy as cp
import numpy as np

from reference_worker.cuda.kernels import CUDA_ERRORS, cuda_errors
from reference_worker.errors import ErrorCode, WorkerError, insufficient_vram
from reference_worker.gguf_file import GGUFFile

log = logging.getLogger(__name__)

ALIGNMENT = 256  # M0-W-1220
DEFAULT_CHUNK_BYTES = 1 << 20  # M0-W-1222
MEMORY_TYPE_DEVICE = 2  # cudaMemoryTypeDevice
OUT_OF_MEMORY = 2  # cudaErrorMemoryAllocation and CUDA_ERROR_OUT_OF_MEMORY share the number


def configure_context(device: int, required_bytes: int, model_path: Path) -> None:
    """Make `device` current, creating its CUDA context, and set what M0-W-1010 asks that CuPy
    can set (module docstring). The context itself takes hundreds of MiB: a GPU too full to
    create it gets INSUFFICIENT_VRAM with the numbers (M0-W-1020), like a model too large."""
    try:
        cp.cuda.Device(device).use()  # since CUDA 12 this creates the primary context
        cp.cuda.runtime.deviceSetLimit(cp.cuda.runtime.cudaLimitMallocHeapSize, 0)
    except CUDA_ERRORS as e:
        if getattr(e, "status", None) == OUT_OF_MEMORY:
            raise insufficient_vram(required_bytes, free_bytes_without_context(device), device, model_path) from e
        raise WorkerError(ErrorCode.CUDA_ERROR, f"CUDA error during CUDA context set-up: {e}") from e
    if cp.cuda.get_allocator() not in (cp.get_default_memory_pool().malloc,):
        raise WorkerError(ErrorCode.CUDA_ERROR, "CuPy's allocator was replaced; only plain device memory is allowed")


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def free_bytes_without_context(device: int) -> int | None:
    """Free memory of `device` as the driver's NVML library reports it, which needs no CUDA
    context (cudaMemGetInfo does); None where NVML cannot say."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        bus_id = cp.cuda.runtime.deviceGetPCIBusId(device).encode()
    except (OSError, *CUDA_ERRORS):
        return None
    handle, memory = ctypes.c_void_p(), _NvmlMemory()
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        found = nvml.nvmlDeviceGetHandleByPciBusId_v2(bus_id, ctypes.byref(handle)) == 0
        return memory.free if found and nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) == 0 else None
    finally:
        nvml.nvmlShutdown()


def is_device_resident(ptr: int) -> bool:
    """cudaPointerGetAttributes: device memory (not managed or host) with no host mapping (M0-W-1012)."""
    try:
        attrs = cp.cuda.runtime.pointerGetAttributes(ptr)
    except cp.cuda.runtime.CUDARuntimeError:
        return False
    return attrs.type == MEMORY_TYPE_DEVICE and attrs.hostPointer == 0


def available_bytes(budget_bytes: int | None) -> int:
    """Free device memory, capped by an explicit VRAM budget (the --vram-budget test hook)."""
    with cuda_errors("cudaMemGetInfo"):
        free, _ = cp.cuda.runtime.memGetInfo()
    return free if budget_bytes is None else min(free, budget_bytes)


@dataclass(frozen=True)
class Placement:
    name: str
    offset: int
    n_bytes: int


def layout(gguf: GGUFFile) -> tuple[dict[str, Placement], int]:
    """Where each tensor goes in the arena (file order, 256-byte aligned), and the arena's size."""
    placements, offset = {}, 0
    for tensor in sorted(gguf.tensors.values(), key=lambda t: t.offset):
        placements[tensor.name] = Placement(tensor.name, offset, tensor.n_bytes)
        offset += -(-tensor.n_bytes // ALIGNMENT) * ALIGNMENT
    return placements, offset


class WeightArena:
    """All tensors of a GGUF file in one device allocation; `view(name)` gives a tensor's bytes."""

    def __init__(self, gguf: GGUFFile, device: int, reserve_bytes: int = 0, budget_bytes: int | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, on_progress=lambda fraction: None) -> None:
        """Allocate and fill the arena. Raises WorkerError(INSUFFICIENT_VRAM) with required and
        available bytes, device and model path when weights + `reserve_bytes` (KV cache and
        scratch) do not fit (M0-W-1020), before allocating anything."""
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self.placements, self.nbytes = layout(gguf)
        required, available = self.nbytes + reserve_bytes, available_bytes(budget_bytes)
        if required > available:
            raise insufficient_vram(required, available, device, gguf.path)
        with cuda_errors("allocating the weight arena"):
            self.memory = cp.cuda.Memory(max(self.nbytes, 1))
        self.base = cp.ndarray((self.nbytes,), np.uint8, cp.cuda.MemoryPointer(self.memory, 0))
        if not is_device_resident(self.memory.ptr):
            raise WorkerError(ErrorCode.CUDA_ERROR, "the weight arena is not plain device memory")
        self._copy(gguf, chunk_bytes, on_progress)

    def _copy(self, gguf: GGUFFile, chunk_bytes: int, on_progress) -> None:
        total, done = max(self.nbytes, 1), 0
        with cuda_errors("copying weights to VRAM"):
            for place in self.placements.values():
                src = gguf.tensors[place.name].raw.reshape(-1)  # a view of the memory map
                for start in range(0, place.n_bytes, chunk_bytes):
                    chunk = src[start:start + chunk_bytes]
                    dst = self.base.data + place.offset + start
                    dst.copy_from_host(chunk.ctypes.data, chunk.nbytes)
                done += place.n_bytes
                on_progress(done / total)
            cp.cuda.runtime.deviceSynchronize()

    def view(self, name: str, rows: int, row_bytes: int, row_start: int = 0) -> cp.ndarray:
        """Rows [row_start, row_start + rows) of tensor `name` as a (rows, row_bytes) uint8 array."""
        place = self.placements[name]
        start = place.offset + row_start * row_bytes
        if start + rows * row_bytes > place.offset + place.n_bytes:
            raise ValueError(f"rows {row_start}..{row_start + rows} are outside tensor {name!r}")
        return self.base[start:start + rows * row_bytes].reshape(rows, row_bytes)

    def close(self) -> None:
        self.base = self.memory = None
