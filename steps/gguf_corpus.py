"""Malformed GGUF files derived from a model: each copy breaks one thing that a worker must
check before it serves (M0-W-1210 pre-load validation, M0-W-1211 header and tensor infos,
M0-W-1212 what the architecture needs), so that a worker that loads it anyway, hangs on it or
dies without MODEL_LOAD_FAILED shows.

The layout (GGUF v3, little-endian; llama.cpp's gguf.cpp and gguf-py's reader):
  magic u32 'GGUF' | version u32 | tensor_count u64 | kv_count u64 |
  kv_count x (key: u64 length + bytes | value type u32 | value) |
  tensor_count x (name: u64 length + bytes | n_dims u32 | n_dims x u64 | type u32 | offset u64) |
  padding to general.alignment (32) | tensor data, each tensor at data start + its offset.
Offsets of the fields come from gguf's own reader; the copies are written by patching bytes.
"""
from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

FAMILIES = ("truncations", "bad versions", "bad counts", "bad offsets", "bad types", "bad shapes")
#: M0-W-1210: "Tensor count is reasonable (<10,000)".
UNREASONABLE_TENSOR_COUNT = 10_000
#: Type ids no ggml build knows: 4 and 5 were Q4_2 and Q4_3 (removed), 9999 was never one.
UNKNOWN_TENSOR_TYPES = (4, 9999)
UNKNOWN_VALUE_TYPE = 99


@dataclass(frozen=True)
class TensorInfo:
    name: str
    n_dims_at: int  # file offset of n_dims
    dims: tuple[int, ...]
    type_at: int
    offset_at: int
    offset: int  # relative to the data start
    n_bytes: int


@dataclass(frozen=True)
class Layout:
    """Where the fields of a GGUF file are."""

    size: int
    tensor_count: int
    kv_count: int
    kv_start: int
    tensor_infos_start: int
    data_start: int
    alignment: int
    value_type_at: dict[str, int]  # metadata key -> file offset of its value type
    tensors: tuple[TensorInfo, ...]

    @classmethod
    def read(cls, path: Path) -> Layout:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        kvs = [f for f in reader.fields.values() if not f.name.startswith("GGUF.")]
        value_type_at = {f.name: f.offset + 8 + len(f.name.encode("utf-8")) for f in kvs}
        tensors = []
        for t in reader.tensors:
            at = t.field.offset + 8 + len(t.name.encode("utf-8"))
            n_dims = len(t.shape)
            tensors.append(TensorInfo(t.name, at, tuple(int(d) for d in t.shape), at + 4 + 8 * n_dims,
                                      at + 8 + 8 * n_dims, int(t.data_offset) - reader.data_offset,
                                      int(t.n_bytes)))
        header = Path(path).open("rb").read(24)
        tensor_count, kv_count = struct.unpack_from("<QQ", header, 8)
        return cls(size=Path(path).stat().st_size, tensor_count=tensor_count, kv_count=kv_count, kv_start=24,
                   tensor_infos_start=reader.tensors[0].field.offset if reader.tensors else reader.data_offset,
                   data_start=reader.data_offset, alignment=reader.alignment, value_type_at=value_type_at,
                   tensors=tuple(tensors))


@dataclass(frozen=True)
class Malformed:
    """One broken copy: the original cut to `length` bytes (None: whole), then `patches`
    (file offset, bytes) written over it."""

    family: str
    case: str
    length: int | None = None
    patches: tuple[tuple[int, bytes], ...] = ()

    def write(self, source: Path, path: Path) -> Path:
        with open(source, "rb") as src, open(path, "wb") as dst:
            if self.length is None:
                shutil.copyfileobj(src, dst, 1 << 22)
            else:
                left = self.length
                while left > 0:
                    chunk = src.read(min(left, 1 << 22))
                    if not chunk:
                        break
                    dst.write(chunk)
                    left -= len(chunk)
            for offset, data in self.patches:
                dst.seek(offset)
                dst.write(data)
        return path


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def corpus(layout: Layout) -> list[Malformed]:
    """Every malformed copy of the file whose layout is given, by family (see FAMILIES)."""
    if not layout.tensors:
        raise ValueError("the model has no tensors to derive malformed copies from")
    first, last = layout.tensors[0], max(layout.tensors, key=lambda t: t.offset)
    largest = max(layout.tensors, key=lambda t: t.n_bytes)
    quantized_2d = next((t for t in layout.tensors if len(t.dims) == 2 and t.dims[0] != t.dims[1]), first)
    cases = [
        Malformed("truncations", "cut inside the magic (2 bytes)", length=2),
        Malformed("truncations", "cut inside the header counts (20 bytes)", length=20),
        Malformed("truncations", "cut inside the metadata",
                  length=(layout.kv_start + layout.tensor_infos_start) // 2),
        Malformed("truncations", "cut inside the tensor infos",
                  length=(layout.tensor_infos_start + layout.data_start) // 2),
        Malformed("truncations", "cut where the tensor data starts", length=layout.data_start),
        Malformed("truncations", f"cut in the middle of tensor {largest.name}",
                  length=layout.data_start + largest.offset + largest.n_bytes // 2),
        Malformed("truncations", f"last byte of {last.name} missing",
                  length=layout.data_start + last.offset + last.n_bytes - 1),
        Malformed("bad versions", "magic GGUX", patches=((0, b"GGUX"),)),
        *(Malformed("bad versions", f"version {v}", patches=((4, _u32(v)),)) for v in (0, 1, 4, 0xFFFFFFFF)),
        Malformed("bad counts", "no tensors (tensor_count 0)", patches=((8, _u64(0)),)),
        Malformed("bad counts", "one tensor more than the file holds",
                  patches=((8, _u64(layout.tensor_count + 1)),)),
        Malformed("bad counts", f"tensor_count {UNREASONABLE_TENSOR_COUNT} (M0-W-1210: under 10,000)",
                  patches=((8, _u64(UNREASONABLE_TENSOR_COUNT)),)),
        Malformed("bad counts", "tensor_count 2^63", patches=((8, _u64(1 << 63)),)),
        Malformed("bad counts", "one metadata entry more than the file holds",
                  patches=((16, _u64(layout.kv_count + 1)),)),
        Malformed("bad counts", "kv_count 2^62", patches=((16, _u64(1 << 62)),)),
        Malformed("bad offsets", f"{first.name} placed past the end of the file",
                  patches=((first.offset_at, _u64(layout.size * 2)),)),
        Malformed("bad offsets", f"{last.name} runs past the end of the file",
                  patches=((last.offset_at, _u64(last.offset + layout.alignment * 4)),)),
        Malformed("bad offsets", f"{first.name} at an offset not a multiple of the alignment",
                  patches=((first.offset_at, _u64(first.offset + 1)),)),
        *(Malformed("bad types", f"{first.name} of tensor type {t}", patches=((first.type_at, _u32(t)),))
          for t in UNKNOWN_TENSOR_TYPES),
        Malformed("bad types", f"metadata general.architecture of value type {UNKNOWN_VALUE_TYPE}",
                  patches=((layout.value_type_at["general.architecture"], _u32(UNKNOWN_VALUE_TYPE)),)),
        Malformed("bad shapes", f"{first.name} with 5 dimensions (ggml has at most 4)",
                  patches=((first.n_dims_at, _u32(5)),)),
        Malformed("bad shapes", f"{first.name} with a dimension of 0", patches=((first.n_dims_at + 4, _u64(0)),)),
        Malformed("bad shapes", f"{largest.name} twice as long as its data",
                  patches=((largest.n_dims_at + 4 + 8 * (len(largest.dims) - 1), _u64(2 * largest.dims[-1])),)),
        Malformed("bad shapes", f"{quantized_2d.name} with its two dimensions swapped",
                  patches=((quantized_2d.n_dims_at + 4, _u64(quantized_2d.dims[1]) + _u64(quantized_2d.dims[0])),)),
    ]
    return cases


def family(layout: Layout, name: str) -> list[Malformed]:
    if name not in FAMILIES:
        raise ValueError(f"no such family of malformed models: {name!r} (one of {', '.join(FAMILIES)})")
    return [m for m in corpus(layout) if m.family == name]
