"""GGUF files: pre-load validation (M0-W-1210), header and metadata (M0-W-1211), architecture
detection (M0-W-1212) and tensor views over a memory map (M0-W-1221).

The header is parsed here, by a reader that checks every count and length against the bytes
that are left before it trusts it, so a malformed file costs at most one pass over its header:
no allocation larger than the file, no hang, and always a WorkerError(MODEL_LOAD_FAILED).
gguf's GGUFReader builds numpy objects per array element and takes seconds on a 150k-token
vocabulary; this reader keeps the file layout, type codes and block sizes of the gguf package
(`gguf.constants`) and returns the tensors as zero-copy views of one `np.memmap`.

Layout (gguf docs/gguf.md, version 3, little-endian): magic "GGUF", u32 version,
u64 tensor_count, u64 kv_count; kv_count x (string key, u32 value type, value);
tensor_count x (string name, u32 n_dims, n_dims x u64 dims, u32 ggml type, u64 offset);
padding to `general.alignment` (default 32); tensor data. A string is u64 length + UTF-8 bytes;
an array is u32 element type + u64 count + elements.
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, LlamaFileType

from reference_worker.errors import ErrorCode, WorkerError

GGUF_MAGIC = b"GGUF"  # 0x47475546 read as a little-endian u32
SUPPORTED_VERSION = 3
MAX_TENSORS = 10_000  # M0-W-1210: tensor count is reasonable
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 4
DEFAULT_ALIGNMENT = 32

# M0-W-1212: general.architecture -> adapter family ("gpt" is the spec's alias of gpt2).
ADAPTER_FAMILIES = {"qwen2": "llama", "llama": "llama", "phi3": "llama"}
ADAPTER_FAMILIES.update({"gpt2": "gpt2", "gpt": "gpt2"})
# "gpt-oss" is llama.cpp's name for GPT-OSS-20B's architecture (src/models/openai-moe.cpp).
ADAPTER_FAMILIES["gpt-oss"] = "gpt-oss"
# File types whose llama.cpp name is not the spec's quant_kind (§ /health: "MXFP4" | ...):
# llama.cpp calls GPT-OSS's MXFP4 experts with Q8_0 dense weights MXFP4_MOE.
QUANT_KIND_NAMES = {LlamaFileType.MOSTLY_MXFP4_MOE: "MXFP4"}

_SCALARS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


def load_failed(message: str, **details: Any) -> WorkerError:
    return WorkerError(ErrorCode.MODEL_LOAD_FAILED, message, details)


@dataclass(frozen=True)
class Tensor:
    """One tensor: its ggml type, numpy-order shape (rows first) and raw bytes as (rows, row_bytes)."""

    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]
    offset: int  # absolute, in the file
    n_bytes: int
    raw: np.ndarray  # uint8 view of the memory map, shape (rows, bytes per row)

    @property
    def n_rows(self) -> int:
        return self.raw.shape[0]


class _HeaderReader:
    """Sequential little-endian reads that refuse to run past the end of the buffer."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.left():
            raise load_failed(f"truncated GGUF header: {what} needs {n} bytes at offset {self.pos}, "
                              f"{self.left()} left in the file")
        view = self.buf[self.pos:self.pos + n]
        self.pos += n
        return view

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        raw = self.take(self.scalar("<Q", f"{what} length"), what)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as e:
            raise load_failed(f"{what} is not valid UTF-8 at offset {self.pos - len(raw)}") from e

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string(what)
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype], what)
        if vtype == GGUFValueType.ARRAY and depth < MAX_ARRAY_DEPTH:
            return self.array(what, depth)
        raise load_failed(f"{what} has unknown value type {vtype}")

    def array(self, what: str, depth: int) -> list:
        etype = self.scalar("<I", f"{what} element type")
        count = self.scalar("<Q", f"{what} element count")
        if etype in _SCALARS:
            dtype = np.dtype(_SCALARS[etype])
            return np.frombuffer(self.take(count * dtype.itemsize, what), dtype).tolist()
        # Every string or nested array takes at least 8 bytes, which bounds the count by the file.
        if count * 8 > self.left():
            raise load_failed(f"{what} claims {count} elements, more than the file can hold")
        return [self.value(etype, what, depth + 1) for _ in range(count)]


class GGUFFile:
    """A validated, memory-mapped GGUF file. `open` is the only way to make one."""

    def __init__(self, path: Path, version: int, metadata: dict[str, Any], tensors: dict[str, Tensor],
                 mmap: np.memmap) -> None:
        self.path = path
        self.version = version
        self.metadata = metadata
        self.tensors = tensors
        self._mmap = mmap

    @classmethod
    def open(cls, path: str | os.PathLike) -> GGUFFile:
        """Validate and map path (M0-W-1210/1211/1221); raises WorkerError(MODEL_LOAD_FAILED)."""
        path = Path(path)
        if not path.is_file():
            raise load_failed(f"model file not found (or not a regular file): {path}", path=str(path))
        try:
            mmap = np.memmap(path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as e:
            raise load_failed(f"cannot read model file {path}: {e}", path=str(path)) from e
        return cls._parse(path, mmap)

    @classmethod
    def _parse(cls, path: Path, mmap: np.memmap) -> GGUFFile:
        header = _HeaderReader(memoryview(mmap))
        magic = bytes(header.take(4, "magic"))
        if magic != GGUF_MAGIC:
            raise load_failed(f"not a GGUF file: magic {magic!r}, expected {GGUF_MAGIC!r}", path=str(path))
        version = header.scalar("<I", "version")
        if version != SUPPORTED_VERSION:
            raise load_failed(f"unsupported GGUF version {version}; version {SUPPORTED_VERSION} is supported")
        n_tensors = header.scalar("<Q", "tensor count")
        n_kv = header.scalar("<Q", "metadata count")
        if n_tensors >= MAX_TENSORS:
            raise load_failed(f"tensor count {n_tensors} is not under {MAX_TENSORS}")
        if n_kv * 12 > header.left():  # a key-value pair takes at least 12 bytes
            raise load_failed(f"metadata count {n_kv} is more than the file can hold")

        metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = header.string(f"metadata key #{i}")
            if key in metadata:
                raise load_failed(f"metadata key {key!r} appears twice")
            metadata[key] = header.value(header.scalar("<I", f"type of {key}"), key)

        infos = [cls._tensor_info(header, i) for i in range(n_tensors)]
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise load_failed(f"general.alignment {alignment!r} is not a power of two")
        data_start = -(-header.pos // alignment) * alignment
        tensors = cls._place(infos, data_start, alignment, mmap)
        return cls(path, version, metadata, tensors, mmap)

    @staticmethod
    def _tensor_info(header: _HeaderReader, i: int) -> tuple[str, GGMLQuantizationType, tuple[int, ...], int]:
        name = header.string(f"tensor #{i} name")
        n_dims = header.scalar("<I", f"{name} dimension count")
        if not 1 <= n_dims <= MAX_DIMS:
            raise load_failed(f"tensor {name!r} has {n_dims} dimensions; 1 to {MAX_DIMS} are allowed")
        dims = [header.scalar("<Q", f"{name} dimension") for _ in range(n_dims)]
        type_code = header.scalar("<I", f"{name} type")
        offset = header.scalar("<Q", f"{name} offset")
        try:
            qtype = GGMLQuantizationType(type_code)
        except ValueError:
            raise load_failed(f"tensor {name!r} has unknown ggml type {type_code}") from None
        if qtype not in GGML_QUANT_SIZES or min(dims) < 1:
            raise load_failed(f"tensor {name!r} has type {qtype.name} and dimensions {dims}")
        return name, qtype, tuple(reversed(dims)), offset

    @staticmethod
    def _place(infos: list, data_start: int, alignment: int, mmap: np.memmap) -> dict[str, Tensor]:
        """Check every tensor lies inside the file, aligned, without overlap; make its view."""
        tensors: dict[str, Tensor] = {}
        for name, qtype, shape, rel_offset in infos:
            block_size, type_size = GGML_QUANT_SIZES[qtype]
            if shape[-1] % block_size:
                raise load_failed(f"tensor {name!r}: row length {shape[-1]} is not a multiple of "
                                  f"the {qtype.name} block size {block_size}")
            rows = math.prod(shape[:-1])
            row_bytes = shape[-1] // block_size * type_size
            n_bytes = rows * row_bytes
            offset = data_start + rel_offset
            if rel_offset % alignment or offset + n_bytes > len(mmap):
                raise load_failed(f"tensor {name!r} ({n_bytes} bytes at offset {offset}) is unaligned or "
                                  f"runs past the end of the {len(mmap)}-byte file")
            if name in tensors:
                raise load_failed(f"tensor {name!r} appears twice")
            raw = mmap[offset:offset + n_bytes].reshape(rows, row_bytes)
            tensors[name] = Tensor(name, qtype, shape, offset, n_bytes, raw)
        by_offset = sorted(tensors.values(), key=lambda t: t.offset)
        for before, after in zip(by_offset, by_offset[1:]):
            if before.offset + before.n_bytes > after.offset:
                raise load_failed(f"tensors {before.name!r} and {after.name!r} overlap")
        return tensors

    @property
    def architecture(self) -> str:
        """general.architecture, checked against the adapters we have (M0-W-1212)."""
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise load_failed("general.architecture is missing from the GGUF metadata")
        if arch not in ADAPTER_FAMILIES:
            raise load_failed(f"unsupported architecture {arch!r}; supported: {', '.join(ADAPTER_FAMILIES)}",
                              architecture=arch)
        return arch

    def hparam(self, key: str, default: Any = None) -> Any:
        """An architecture-scoped key such as `qwen2.block_count`; required unless a default is given."""
        full = f"{self.architecture}.{key}"
        if full in self.metadata:
            return self.metadata[full]
        if default is None:
            raise load_failed(f"metadata key {full!r} is missing")
        return default

    def tensor(self, name: str, shape: tuple[int, ...] | None = None) -> Tensor:
        """The tensor called name; with shape, it must have that (numpy-order) shape."""
        if name not in self.tensors:
            raise load_failed(f"tensor {name!r} is missing from the model file")
        tensor = self.tensors[name]
        if shape is not None and tensor.shape != shape:
            raise load_failed(f"tensor {name!r} has shape {tensor.shape}; the model's hyperparameters need {shape}")
        return tensor

    @property
    def name(self) -> str:
        """general.name, else the file stem."""
        return self.metadata.get("general.name") or self.path.stem

    @property
    def quant_kind(self) -> str:
        """general.file_type as llama.cpp names it ("Q4_K_M", "Q8_0", "F16", ...)."""
        try:
            file_type = LlamaFileType(self.metadata.get("general.file_type"))
        except ValueError:
            return "unknown"
        return QUANT_KIND_NAMES.get(file_type) or file_type.name.removeprefix("MOSTLY_").removeprefix("ALL_")
