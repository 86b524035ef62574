"""GGUF loading: metadata and tensors as gguf's reader sees them, and malformed files refused
cleanly (M0-W-1210/1211/1212/1221)."""
from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from gguf import GGUFReader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.gguf_file import GGUFFile


def gguf_bytes(tensors=(("w", (32,), 0, 0),), metadata=(("general.architecture", "qwen2"),),
               version=3, tensor_count=None, kv_count=None, data=b"\0" * 128) -> bytes:
    """A hand-made GGUF: tensors as (name, numpy shape, ggml type, offset), string metadata."""
    def string(s: str) -> bytes:
        return struct.pack("<Q", len(s.encode())) + s.encode()

    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if tensor_count is None else tensor_count,
                                len(metadata) if kv_count is None else kv_count)
    for key, value in metadata:
        out += string(key) + struct.pack("<I", 8) + string(value)
    for name, shape, ggml_type, offset in tensors:
        out += string(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *reversed(shape))
        out += struct.pack("<IQ", ggml_type, offset)
    return out + b"\0" * (-len(out) % 32) + data


def load_error(tmp_path, content: bytes) -> WorkerError:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(WorkerError) as caught:
        GGUFFile.open(path).architecture
    assert caught.value.code == ErrorCode.MODEL_LOAD_FAILED
    return caught.value


def test_metadata_and_tensors_match_gguf_reader(synthetic_model):
    ours = GGUFFile.open(synthetic_model)
    theirs = GGUFReader(synthetic_model)
    assert {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")} == ours.metadata
    assert [t.name for t in theirs.tensors] == list(ours.tensors)
    for t in theirs.tensors:
        mine = ours.tensors[t.name]
        assert (mine.qtype, mine.offset, mine.n_bytes) == (t.tensor_type, t.data_offset, t.n_bytes)
        assert mine.shape == tuple(reversed([int(d) for d in t.shape]))
        assert np.array_equal(mine.raw.reshape(-1), np.asarray(t.data).view(np.uint8).reshape(-1))
        assert isinstance(mine.raw.base, np.memmap) or isinstance(mine.raw, np.memmap)  # M0-W-1221: a view


def test_header_fields(synthetic_model):
    model = GGUFFile.open(synthetic_model)
    assert model.version == 3
    assert model.architecture == "qwen2"
    assert model.name == "synthetic-qwen2-mixed-seed0"
    assert model.quant_kind == "Q4_K_M"
    assert model.hparam("block_count") == 2


def test_a_hand_made_file_loads(tmp_path):
    path = tmp_path / "ok.gguf"
    path.write_bytes(gguf_bytes())
    assert GGUFFile.open(path).tensors["w"].shape == (32,)


@pytest.mark.parametrize("content, message", [
    (b"", "cannot read"),
    (b"GGML" + gguf_bytes()[4:], "magic"),
    (gguf_bytes(version=2), "version 2"),
    (gguf_bytes(tensor_count=10_000), "tensor count 10000"),
    (gguf_bytes(kv_count=2**63), "metadata count"),
    (gguf_bytes()[:60], "truncated"),
    (gguf_bytes()[:24] + struct.pack("<Q", 2**62) + gguf_bytes()[32:], "truncated GGUF header: metadata key #0"),
    (gguf_bytes(tensors=[("w", (32,), 0, 4096)]), "past the end"),
    (gguf_bytes(tensors=[("w", (32,), 0, 8)]), "unaligned"),
    (gguf_bytes(tensors=[("a", (32,), 0, 0), ("b", (32,), 0, 64)]), "past the end"),
    (gguf_bytes(tensors=[("a", (16,), 0, 0), ("b", (16,), 0, 32)], data=b"\0" * 96), "overlap"),
    (gguf_bytes(tensors=[("a", (32,), 0, 0), ("a", (32,), 0, 0)]), "twice"),
    (gguf_bytes(tensors=[("w", (30,), 8, 0)]), "block size"),
    (gguf_bytes(tensors=[("w", (32,), 99, 0)]), "unknown ggml type"),
    (gguf_bytes(tensors=[("w", (1, 1, 1, 1, 32), 0, 0)]), "dimensions"),
    (gguf_bytes(tensors=[("w", (2**40, 2**40), 0, 0)]), "past the end"),
    (gguf_bytes(metadata=[("general.architecture", "mamba")]), "unsupported architecture 'mamba'"),
    (gguf_bytes(metadata=[]), "general.architecture is missing"),
])
def test_malformed_files_are_refused_with_a_clear_message(tmp_path, content, message):
    assert message in load_error(tmp_path, content).message


def test_missing_file_and_directory_are_refused(tmp_path):
    for path in (tmp_path / "absent.gguf", tmp_path):
        with pytest.raises(WorkerError) as caught:
            GGUFFile.open(path)
        assert caught.value.code == ErrorCode.MODEL_LOAD_FAILED and "not found" in caught.value.message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_files_load_or_fail_cleanly(tmp_path, synthetic_model, data):
    """Truncations, byte flips and 64-bit overwrites in the header: a WorkerError or a model."""
    content = bytearray(synthetic_model.read_bytes())
    header_end = min(t.offset for t in GGUFFile.open(synthetic_model).tensors.values())
    for _ in range(data.draw(st.integers(1, 4))):
        if len(content) < 8:
            break
        where = data.draw(st.integers(0, min(header_end, len(content) - 8)))
        kind = data.draw(st.sampled_from(["flip", "u64", "truncate"]))
        if kind == "flip":
            content[where] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "u64":
            value = data.draw(st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1]))
            content[where:where + 8] = struct.pack("<Q", value)
        else:
            del content[where:]
    path = tmp_path / "fuzzed.gguf"
    path.write_bytes(bytes(content))
    started = time.monotonic()
    try:
        model = GGUFFile.open(path)
        model.architecture
    except WorkerError as e:
        assert e.code == ErrorCode.MODEL_LOAD_FAILED
    assert time.monotonic() - started < 5  # bounded: one pass over the header, never a hang
