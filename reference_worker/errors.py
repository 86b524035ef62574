"""Error values with the spec's stable codes (M0-W-1500, M0-W-1510).

Raised once where the problem is found; turned into an HTTP status, an SSE `error`
event or a process exit status in one place each (server, sse, cli).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


class ErrorCode(str, Enum):
    """M0-W-1500: the stable error codes, spelled as on the wire."""

    INVALID_REQUEST = "INVALID_REQUEST"
    MODEL_LOAD_FAILED = "MODEL_LOAD_FAILED"
    INSUFFICIENT_VRAM = "INSUFFICIENT_VRAM"
    VRAM_OOM = "VRAM_OOM"
    CUDA_ERROR = "CUDA_ERROR"
    INFERENCE_TIMEOUT = "INFERENCE_TIMEOUT"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"


# Whether a caller may retry the same request elsewhere or later (M0-W-1510 `retriable`).
_RETRIABLE = {
    ErrorCode.VRAM_OOM: True,
    ErrorCode.INFERENCE_TIMEOUT: True,
    ErrorCode.CUDA_ERROR: True,
    ErrorCode.INTERNAL: True,
}


@dataclass
class WorkerError(Exception):
    """An error the worker reports with a stable code, a message and optional details."""

    code: ErrorCode
    message: str
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.code.value}: {self.message}")

    @property
    def retriable(self) -> bool:
        return _RETRIABLE.get(self.code, False)

    def to_json(self) -> dict:
        """The body of an SSE `error` event or an HTTP error response."""
        return {"code": self.code.value, "message": self.message, "retriable": self.retriable, **self.details}


def insufficient_vram(required: int, available: int | None, device: int, model_path: str | Path,
                      message: str | None = None) -> WorkerError:
    """M0-W-1020: the startup failure that names required and available bytes, device and model
    (message: what was short, when it is more than the model as a whole)."""
    said = "an unknown number" if available is None else str(available)
    message = message or f"model needs {required} bytes of VRAM on GPU {device}, {said} are available"
    return WorkerError(ErrorCode.INSUFFICIENT_VRAM, f"{message} (model {model_path})",
                       {"required_bytes": required, "available_bytes": available, "device": device,
                        "model_path": str(model_path)})
