"""Builds the CPU emulations of the CUDA kernels (tests/cuda_on_cpu/NAME.cpp) for the *_on_cpu tests."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SOURCES = Path(__file__).parent / "cuda_on_cpu"
KERNELS = Path(__file__).parents[1] / "reference_worker" / "cuda"


def build(tmp_path_factory, name: str) -> Path:
    """Compile cuda_on_cpu/NAME.cpp against the kernels with g++ (C++20: _Float16) into a
    temporary binary; skip where there is no g++."""
    if shutil.which("g++") is None:
        pytest.skip("needs g++ (C++20, _Float16) to build the CPU emulation")
    binary = tmp_path_factory.mktemp("cuda_on_cpu") / name
    subprocess.run(["g++", "-std=c++20", "-O2", f"-I{KERNELS}", "-o", str(binary), str(SOURCES / f"{name}.cpp")],
                   check=True, capture_output=True)
    return binary
