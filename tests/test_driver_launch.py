"""reference_worker/cuda/driver_launch.py without a GPU: the bytes a cuLaunchKernelEx call would
read (each argument as the C type CuPy's RawKernel gives it, the kernelParams array, the launch
config and its attributes), checked against cuda.h's layouts as a C compiler lays them out
(ctypes structures mirroring cuda.h)."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from reference_worker.cuda import driver_launch
from reference_worker.cuda.driver_launch import (ATTRIBUTE_PROGRAMMATIC, LAUNCH_CONFIG, SLOT, LaunchAttribute,
                                                 attributes, pack_launch)


class CUlaunchConfig(ctypes.Structure):
    """cuda.h's CUlaunchConfig field by field; ctypes aligns each as the C compiler does."""

    _fields_ = [("gridDimX", ctypes.c_uint), ("gridDimY", ctypes.c_uint), ("gridDimZ", ctypes.c_uint),
                ("blockDimX", ctypes.c_uint), ("blockDimY", ctypes.c_uint), ("blockDimZ", ctypes.c_uint),
                ("sharedMemBytes", ctypes.c_uint), ("hStream", ctypes.c_void_p), ("attrs", ctypes.c_void_p),
                ("numAttrs", ctypes.c_uint)]


def test_the_layouts_are_cuda_h_s():
    # Sizes printed by a C program built against CUDA 13.0's cuda.h (the same since 12.0).
    assert LAUNCH_CONFIG.size == ctypes.sizeof(CUlaunchConfig) == 56
    assert ctypes.sizeof(LaunchAttribute) == 72 and LaunchAttribute.value.offset == 8


def unpack(buffer, params: int, config: int, n_args: int) -> tuple[list[bytes], CUlaunchConfig]:
    """Each argument's bytes as the kernelParams array points at them, and the config."""
    pointers = (ctypes.c_uint64 * n_args).from_address(params)
    return ([ctypes.string_at(p, SLOT) for p in pointers],
            CUlaunchConfig.from_buffer_copy(ctypes.string_at(config, LAUNCH_CONFIG.size)))


def test_a_launch_holds_the_config_and_points_at_each_argument():
    launch_attributes = attributes(ATTRIBUTE_PROGRAMMATIC)
    args = (np.int32(-3), np.float32(1.5), np.int64(504), np.uint64(0), np.uint32(7))
    buffer, params, config = pack_launch(args, (224, 2, 1), (128, 1, 1), 3584, 0x5000, launch_attributes)
    slots, cfg = unpack(buffer, params, config, len(args))
    assert [s[:4] for s in slots[:2]] == [np.int32(-3).tobytes(), np.float32(1.5).tobytes()]
    assert slots[2:] == [np.int64(504).tobytes(), bytes(8), np.uint32(7).tobytes() + bytes(4)]
    assert (cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ, cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ) == (224, 2, 1,
                                                                                                       128, 1, 1)
    assert (cfg.sharedMemBytes, cfg.hStream, cfg.numAttrs) == (3584, 0x5000, 1)
    assert cfg.attrs == ctypes.addressof(launch_attributes)
    assert (launch_attributes[0].id, launch_attributes[0].value[0]) == (ATTRIBUTE_PROGRAMMATIC, 1)


@pytest.mark.parametrize("value, c_bytes", [
    (5, np.int64(5).tobytes()), (-1, np.int64(-1).tobytes()), (2**64 - 1, np.uint64(2**64 - 1).tobytes()),
    (2.5, np.float64(2.5).tobytes()), (True, b"\x01"), (np.bool_(True), b"\x01"), (np.int8(-2), np.int8(-2).tobytes()),
    (np.uint16(65535), np.uint16(65535).tobytes()), (np.float16(0.5), np.float16(0.5).tobytes()),
])
def test_python_and_numpy_scalars_pass_as_cupy_passes_them(value, c_bytes):
    # CuPy (cupy/_core/_scalar.pyx): int as long long (unsigned long long from 2**63), float as
    # double, bool as bool, a NumPy scalar as its own type.
    buffer, params, config = pack_launch((value,), (1, 1, 1), (1, 1, 1), 0, 0, attributes())
    assert unpack(buffer, params, config, 1)[0][0][:len(c_bytes)] == c_bytes


@pytest.mark.parametrize("value", [1j, np.complex64(1), "text", None, np.zeros(2, np.float32)])
def test_arguments_of_other_kinds_are_refused(value):
    with pytest.raises(TypeError, match="kernel argument"):
        pack_launch((value,), (1, 1, 1), (1, 1, 1), 0, 0, attributes())


def test_an_int_past_64_bits_is_refused():
    with pytest.raises(OverflowError):
        pack_launch((2**64,), (1, 1, 1), (1, 1, 1), 0, 0, attributes())


def test_a_launch_without_arguments_or_attributes_has_an_empty_params_array():
    buffer, params, config = pack_launch((), (1, 1, 1), (32, 1, 1), 0, 0, attributes())
    assert params == config == ctypes.addressof(buffer)
    assert unpack(buffer, params, config, 0)[1].numAttrs == 0


def test_grids_and_blocks_of_fewer_dimensions_are_padded_with_ones():
    assert driver_launch._dims((7,)) == (7, 1, 1) and driver_launch._dims((7, 3)) == (7, 3, 1)
