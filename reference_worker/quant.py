"""NumPy decoders of the GGUF weight types the reference worker supports.

Each decoder turns blocks, a (n_blocks, type_size) uint8 array, into (n_blocks, block_size)
float32. The block layouts are those of llama.cpp's ggml/src/ggml-common.h (the `block_*`
structs) and the order of values within a block that of `dequantize_row_*` in
ggml/src/ggml-quants.c; each decoder's docstring states its layout once. Block and type sizes
come from gguf's GGML_QUANT_SIZES. All multi-byte fields are little-endian.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q

from reference_worker.errors import ErrorCode, WorkerError

QK_K = 256  # values per K-quant super-block


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The fp16 field at byte `start` of every block, as a (n_blocks, 1) float32 column."""
    return blocks[:, start:start + 2].copy().view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, m) packed bytes -> (n, 2m): the m low nibbles, then the m high nibbles."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def decode_f32(blocks: np.ndarray) -> np.ndarray:
    """F32: one little-endian float32 per value."""
    return blocks.copy().view(np.float32)


def decode_f16(blocks: np.ndarray) -> np.ndarray:
    """F16: one IEEE half per value."""
    return blocks.copy().view(np.float16).astype(np.float32)


def decode_bf16(blocks: np.ndarray) -> np.ndarray:
    """BF16: the upper 16 bits of a float32."""
    return (blocks.copy().view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def decode_q8_0(blocks: np.ndarray) -> np.ndarray:
    """Q8_0, 32 values in 34 bytes: fp16 d, int8 q[32]; x = d * q."""
    return _f16(blocks, 0) * blocks[:, 2:].view(np.int8)


def decode_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0, 32 values in 18 bytes: fp16 d, qs[16]; x[j] = d * (low nibble of qs[j] - 8),
    x[j + 16] = d * (high nibble of qs[j] - 8)."""
    return _f16(blocks, 0) * (_nibbles(blocks[:, 2:]).astype(np.int8) - 8)


def decode_q5_0(blocks: np.ndarray) -> np.ndarray:
    """Q5_0, 32 values in 22 bytes: fp16 d, u32 qh (bit j = 5th bit of value j), qs[16] as Q4_0;
    x = d * (q - 16)."""
    high = np.unpackbits(blocks[:, 2:6], axis=1, bitorder="little")
    return _f16(blocks, 0) * ((_nibbles(blocks[:, 6:]) | (high << 4)).astype(np.int8) - 16)


def decode_q4_k(blocks: np.ndarray) -> np.ndarray:
    """Q4_K, 256 values in 144 bytes: fp16 d, fp16 dmin, scales[12], qs[128].

    Eight sub-blocks of 32 have 6-bit scale sc[i] and min m[i], packed in scales[12]
    (get_scale_min_k4): for i < 4, sc = s[i] & 63, m = s[i + 4] & 63; for i >= 4,
    sc = (s[i + 4] & 15) | (s[i - 4] >> 6) << 4, m = (s[i + 4] >> 4) | (s[i] >> 6) << 4.
    qs holds four runs of 32 bytes; run g gives sub-block 2g (low nibbles) and 2g + 1 (high).
    x = d * sc * q - dmin * m.
    """
    n = len(blocks)
    s = blocks[:, 4:16]
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 15) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    qs = blocks[:, 16:].reshape(n, 4, 1, 32)
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32)
    scale = (_f16(blocks, 0) * sc)[:, :, None]
    offset = (_f16(blocks, 2) * m)[:, :, None]
    return (scale * q - offset).reshape(n, QK_K)


def decode_q6_k(blocks: np.ndarray) -> np.ndarray:
    """Q6_K, 256 values in 210 bytes: ql[128], qh[64], int8 scales[16], fp16 d.

    Two halves of 128 values, each from 64 bytes of ql and 32 of qh. In half h, for l < 32:
    value l takes the low nibble of ql[l] and bits 0-1 of qh[l]; value l + 32 the low nibble of
    ql[l + 32] and bits 2-3; value l + 64 the high nibble of ql[l] and bits 4-5; value l + 96
    the high nibble of ql[l + 32] and bits 6-7. Each run of 16 values has its own scale;
    x = d * scale * (q - 32).
    """
    n = len(blocks)
    ql = blocks[:, :128].reshape(n, 2, 1, 64)
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2).reshape(n, 2, 4, 32)
    high = (qh >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & 3
    q = (low | (high << 4)).astype(np.int8) - 32
    scale = _f16(blocks, 208) * blocks[:, 192:208].view(np.int8)
    return (scale.reshape(n, 16, 1) * q.reshape(n, 16, 16)).reshape(n, QK_K)


# e2m1 magnitudes doubled, sign in bit 3 (ggml-common.h kvalues_mxfp4).
_E2M1_DOUBLED = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)


def decode_mxfp4(blocks: np.ndarray) -> np.ndarray:
    """MXFP4, 32 values in 17 bytes: u8 e (E8M0 shared exponent), qs[16] as Q4_0 nibbles of e2m1
    codes; x = kvalues[code] * 2^(e - 128) (the table is doubled, so half the scale 2^(e - 127))."""
    half_scale = np.ldexp(np.float32(1), blocks[:, :1].astype(np.int32) - 128)
    return half_scale * _E2M1_DOUBLED[_nibbles(blocks[:, 1:])]


DECODERS: dict[Q, Callable[[np.ndarray], np.ndarray]] = {
    Q.F32: decode_f32, Q.F16: decode_f16, Q.BF16: decode_bf16, Q.Q8_0: decode_q8_0, Q.Q4_0: decode_q4_0,
    Q.Q5_0: decode_q5_0, Q.Q4_K: decode_q4_k, Q.Q6_K: decode_q6_k, Q.MXFP4: decode_mxfp4,
}

_CHUNK_BYTES = 1 << 22  # decode in slices so temporaries stay a few MB


def dequantize(raw: np.ndarray, qtype: Q, out: np.ndarray | None = None) -> np.ndarray:
    """Decode (rows, row_bytes) uint8 rows of qtype into a (rows, row_values) float32 array.

    Raises WorkerError(MODEL_LOAD_FAILED) for a type without a decoder.
    """
    if qtype not in DECODERS:
        raise WorkerError(ErrorCode.MODEL_LOAD_FAILED, f"weight type {qtype.name} is not supported")
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    rows, row_bytes = raw.shape
    row_values = row_bytes // type_size * block_size
    if out is None:
        out = np.empty((rows, row_values), np.float32)
    step = max(1, _CHUNK_BYTES // max(row_bytes, 1))
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN weights decode as themselves
        for start in range(0, rows, step):
            chunk = np.asarray(raw[start:start + step])
            out[start:start + step] = DECODERS[qtype](chunk.reshape(-1, type_size)).reshape(len(chunk), row_values)
    return out
