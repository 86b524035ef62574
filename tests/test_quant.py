"""Our quant decoders against gguf's own `dequantize`, on random blocks and the real model."""
from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_worker.errors import WorkerError
from reference_worker.gguf_file import GGUFFile
from reference_worker.quant import DECODERS, dequantize


def reference(raw: np.ndarray, qtype: Q) -> np.ndarray:
    """gguf-py's decoding; it has no class for the plain float types, numpy does those."""
    if qtype in (Q.F32, Q.F16):
        return raw.view(np.float32 if qtype == Q.F32 else np.float16).astype(np.float32)
    return gguf.quants.dequantize(raw, qtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # gguf-py warns on the inf and NaN of random scales
@settings(max_examples=60, deadline=None)
@given(qtype=st.sampled_from(sorted(DECODERS)), rows=st.integers(1, 5), blocks=st.integers(1, 4), data=st.data())
def test_decoders_match_gguf_on_random_blocks(qtype, rows, blocks, data):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    raw = np.frombuffer(data.draw(st.binary(min_size=rows * blocks * type_size, max_size=rows * blocks * type_size)),
                        np.uint8).reshape(rows, blocks * type_size)
    ours = dequantize(raw, qtype)
    assert ours.shape == (rows, blocks * block_size)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, reference(raw, qtype))  # bit-exact, NaN and inf included


@settings(max_examples=30, deadline=None)
@given(qtype=st.sampled_from([Q.Q8_0, Q.Q5_0, Q.Q4_0, Q.MXFP4, Q.BF16]),
       values=st.lists(st.floats(-100, 100, width=32), min_size=32, max_size=32))
def test_decoding_inverts_gguf_quantization_within_its_step(qtype, values):
    x = np.array(values, np.float32).reshape(1, 32)
    decoded = dequantize(gguf.quants.quantize(x, qtype), qtype)
    step = np.abs(x).max() / {Q.Q8_0: 127, Q.Q5_0: 15, Q.Q4_0: 7, Q.MXFP4: 2, Q.BF16: 128}[qtype]
    assert np.all(np.abs(decoded - x) <= step + 1e-6)


def test_unsupported_type_is_a_load_error():
    with pytest.raises(WorkerError) as e:
        dequantize(np.zeros((1, 84), np.uint8), Q.Q2_K)
    assert e.value.code.value == "MODEL_LOAD_FAILED"


@pytest.mark.real_model
def test_decoders_match_gguf_on_every_real_tensor_type(real_model_path):
    model = GGUFFile.open(real_model_path)
    seen = set()
    for tensor in model.tensors.values():
        rows = tensor.raw[:64]  # a slice of each tensor keeps this fast
        np.testing.assert_array_equal(dequantize(rows, tensor.qtype), reference(np.asarray(rows), tensor.qtype))
        seen.add(tensor.qtype)
    assert seen == {Q.F32, Q.Q5_0, Q.Q8_0, Q.Q4_K, Q.Q6_K}
