"""The CUDA backend: `.cu` kernels loaded with cupy.RawModule (kernels.py), the VRAM arena and
residency checks (arena.py), and the backend's ops for the model adapter (ops.py).

Importing this package needs no GPU; `require_cupy` is the one place that says why the backend
cannot run here, as a WorkerError(CUDA_ERROR).
"""
from __future__ import annotations

from reference_worker.errors import ErrorCode, WorkerError


def require_cupy(device: int = 0):
    """Return the cupy module; raise WorkerError(CUDA_ERROR) if there is no CuPy or no such CUDA
    device. Creates no CUDA context: that is CudaOps's first step, where running out of memory
    is reported as such."""
    try:
        import cupy
    except ImportError as e:
        raise WorkerError(ErrorCode.CUDA_ERROR, f"the cuda backend needs CuPy: {e}") from e
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as e:
        raise WorkerError(ErrorCode.CUDA_ERROR, f"no CUDA device is usable: {e}") from e
    if not 0 <= device < count:
        raise WorkerError(ErrorCode.CUDA_ERROR, f"GPU device {device} does not exist ({count} found)",
                          {"device": device})
    return cupy


def cuda_unavailable_reason() -> str | None:
    """Why CUDA tests and benchmarks cannot run here, or None when they can."""
    try:
        require_cupy()
    except WorkerError as e:
        return e.message
    return None
