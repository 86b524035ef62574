"""Kernel launches through the CUDA driver's cuLaunchKernelEx (ctypes on libcuda.so.1), which
takes launch attributes that CuPy's own launch cannot set: programmatic dependent launch (PDL,
sm_90 and later: the kernel may start while the one before it on the stream still runs, and
orders itself with common.cuh's wait_for_prerequisites) and the cooperative launch.

`Driver.launch` takes a kernel CuPy compiled (`RawModule.get_function(name).kernel.ptr` is its
CUfunction), a stream's handle, and arguments of the kinds CuPy's RawKernel takes, passed as
CuPy passes them (cupy/_core/_scalar.pyx, numpy_dtype_from_pyscalar): a cupy array as its data
pointer, a NumPy scalar as its C type, a Python int as long long (unsigned from 2**63), a float
as double, a bool as bool. It runs on the context CuPy made current. Importing this module
needs neither CuPy nor a GPU; the driver library is opened by the first `Driver()`.
"""
from __future__ import annotations

import ctypes
import functools
import operator
import struct
import sys

import numpy as np

ATTRIBUTE_COOPERATIVE = 2  # CU_LAUNCH_ATTRIBUTE_COOPERATIVE (cuda.h)
ATTRIBUTE_PROGRAMMATIC = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
PROGRAMMATIC_COMPUTE_CAPABILITY = 90  # griddepcontrol needs sm_90 (PTX ISA 7.8)

# CUlaunchConfig (cuda.h, CUDA 12.0 on): grid x, y, z, block x, y, z, shared memory bytes (unsigned
# ints), 4 bytes of padding, then the stream, the attribute array, their count and tail padding.
LAUNCH_CONFIG = struct.Struct("=7I4xQQI4x")
SLOT = 8  # bytes of each argument's slot in a launch's buffer: every kind we pass fits in one


class LaunchAttribute(ctypes.Structure):
    """CUlaunchAttribute: an id, padding to 8 bytes, a 64-byte value union (all we set is an int)."""

    _fields_ = [("id", ctypes.c_uint), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int * 16)]


# The struct code of each NumPy scalar type a kernel can take, by (kind, itemsize).
SCALAR_CODES = {("b", 1): "?", ("i", 1): "b", ("i", 2): "h", ("i", 4): "i", ("i", 8): "q", ("u", 1): "B",
                ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q", ("f", 2): "e", ("f", 4): "f", ("f", 8): "d"}


def _int64_bits(value: int) -> int:
    """A Python int as the 64 bits CuPy passes for it: int64 below 2**63, uint64 from there."""
    if not -2**63 <= value < 2**64:
        raise OverflowError(f"a kernel argument of {value} does not fit 64 bits")
    return value % 2**64


@functools.cache
def _argument_kind(kind: type) -> tuple[str, object]:
    """(struct code padded to a SLOT, the function giving the value to pack, or None for the
    argument itself) for an argument of type `kind`."""
    if kind is bool:
        return "?7x", None
    if kind is int:
        return "Q0x", _int64_bits
    if kind is float:
        return "d0x", None
    if issubclass(kind, np.generic):
        dtype = np.dtype(kind)
        if (dtype.kind, dtype.itemsize) not in SCALAR_CODES:
            raise TypeError(f"a kernel argument cannot be a NumPy {dtype.name}")
        return f"{SCALAR_CODES[dtype.kind, dtype.itemsize]}{SLOT - dtype.itemsize}x", None
    cupy = sys.modules.get("cupy")  # where CuPy was never imported there is no cupy array
    if cupy is not None and issubclass(kind, cupy.ndarray):
        return "Q0x", operator.attrgetter("data.ptr")
    raise TypeError(f"a kernel argument cannot be a {kind.__name__}")


@functools.cache
def _packer(kinds: tuple[type, ...]) -> tuple[struct.Struct, tuple]:
    """The layout of a launch's buffer for arguments of these types: their slots, then a
    pointer to each slot (the kernelParams array), then the LAUNCH_CONFIG; and each argument's
    converter."""
    formats, converters = zip(*map(_argument_kind, kinds)) if kinds else ((), ())
    return struct.Struct("=" + "".join(formats) + "Q" * len(kinds) + LAUNCH_CONFIG.format[1:]), converters


def pack_launch(args: tuple, grid: tuple[int, int, int], block: tuple[int, int, int], shared_mem: int, stream: int,
                attributes: ctypes.Array) -> tuple[ctypes.Array, int, int]:
    """A buffer holding what cuLaunchKernelEx reads: the arguments' values, the kernelParams
    array pointing at them, and the launch config (with `attributes`, which must outlive the
    launch call); and the addresses of the params array and of the config in it."""
    layout, converters = _packer(tuple(map(type, args)))
    values = [a if convert is None else convert(a) for convert, a in zip(converters, args)]
    buffer = ctypes.create_string_buffer(layout.size)
    base = ctypes.addressof(buffer)
    params = base + SLOT * len(args)
    layout.pack_into(buffer, 0, *values, *range(base, params, SLOT), *grid, *block, shared_mem, stream,
                     ctypes.addressof(attributes), len(attributes))
    return buffer, params, params + SLOT * len(args)


@functools.cache
def attributes(*ids: int) -> ctypes.Array:
    """A launch attribute array (made once, kept for the process) setting each of `ids` to 1."""
    array = (LaunchAttribute * len(ids))()
    for attribute, attribute_id in zip(array, ids):
        attribute.id, attribute.value[0] = attribute_id, 1
    return array


def _dims(dims: tuple[int, ...]) -> tuple[int, int, int]:
    return (*dims, 1, 1)[:3]


class Driver:
    """The driver calls CuPy does not wrap, on the context CuPy made current. A failed call
    raises CuPy's CUDADriverError (a RuntimeError; kernels.cuda_errors makes it CUDA_ERROR)."""

    def __init__(self) -> None:
        self._lib = ctypes.CDLL("libcuda.so.1")
        if self.has("cuLaunchKernelEx"):
            self._lib.cuLaunchKernelEx.argtypes = [ctypes.c_void_p] * 4

    def has(self, name: str) -> bool:
        return hasattr(self._lib, name)

    def supports_programmatic_launch(self, compute_capability: int) -> bool:
        """Whether kernels can be launched with PDL here: a GPU of sm_90 or later and a driver
        with cuLaunchKernelEx (CUDA 12.0 on)."""
        return compute_capability >= PROGRAMMATIC_COMPUTE_CAPABILITY and self.has("cuLaunchKernelEx")

    def __call__(self, name: str, *args) -> None:
        self._check(name, getattr(self._lib, name)(*args))

    def _check(self, name: str, status: int) -> None:
        if status != 0:
            import cupy  # here, so that the module loads (and its CPU tests run) without CuPy

            error = cupy.cuda.driver.CUDADriverError(status)
            error.args = (f"{error} (in {name})",)
            raise error

    def launch(self, function: int, grid: tuple[int, ...], block: tuple[int, ...], stream: int, args: tuple,
               shared_mem: int = 0, launch_attributes: ctypes.Array = attributes()) -> None:
        """cuLaunchKernelEx of `function` (a CUfunction) over grid x block (up to three
        dimensions each) on `stream` (a CUstream handle) with `args` (the kinds above), each
        attribute of `launch_attributes` (see `attributes`) set."""
        # `buffer` lives until the call returns: the driver copies the arguments during it.
        buffer, params, config = pack_launch(args, _dims(grid), _dims(block), shared_mem, stream, launch_attributes)
        self._check("cuLaunchKernelEx", self._lib.cuLaunchKernelEx(config, function, params, None))


@functools.cache
def driver() -> Driver:
    """The process's Driver."""
    return Driver()
