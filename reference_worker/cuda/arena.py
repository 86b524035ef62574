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

import logging
from dataclasses import dataclass

import cupy as cp
import numpy as np

from reference_worker.cuda.kernels import cuda_errors
from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.gguf_file import GGUFFile

log = logging.getLogger(__name__)

ALIGNMENT = 256  # M0-W-1220
DEFAULT_CHUNK_BYTES = 1 << 20  # M0-W-1222
MEMORY_TYPE_DEVICE = 2  # cudaMemoryTypeDevice


def configure_context(device: int) -> None:
    """Make `device` current and set what M0-W-1010 asks that CuPy can set (module docstring)."""
    with cuda_errors("CUDA context set-up"):
        cp.cuda.Device(device).use()
        cp.cuda.runtime.deviceSetLimit(cp.cuda.runtime.cudaLimitMallocHeapSize, 0)
    if cp.cuda.get_allocator() not in (cp.get_default_memory_pool().malloc,):
        raise WorkerError(ErrorCode.CUDA_ERROR, "CuPy's allocator was replaced; only plain device memory is allowed")


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


class WeightArena:
    """All tensors of a GGUF file in one device allocation; `view(name)` gives a tensor's bytes."""

    def __init__(self, gguf: GGUFFile, device: int, reserve_bytes: int = 0, budget_bytes: int | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, on_progress=lambda fraction: None) -> None:
        """Allocate and fill the arena. Raises WorkerError(INSUFFICIENT_VRAM) with required and
        available bytes, device and model path when weights + `reserve_bytes` (KV cache and
        scratch) do not fit (M0-W-1020), before allocating anything."""
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self.placements: dict[str, Placement] = {}
        offset = 0
        for tensor in sorted(gguf.tensors.values(), key=lambda t: t.offset):
            self.placements[tensor.name] = Placement(tensor.name, offset, tensor.n_bytes)
            offset += -(-tensor.n_bytes // ALIGNMENT) * ALIGNMENT
        self.nbytes = offset
        required, available = offset + reserve_bytes, available_bytes(budget_bytes)
        if required > available:
            raise WorkerError(ErrorCode.INSUFFICIENT_VRAM,
                              f"model needs {required} bytes of VRAM on GPU {device}, {available} are available "
                              f"(model {gguf.path})",
                              {"required_bytes": required, "available_bytes": available, "device": device,
                               "model_path": str(gguf.path)})
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
