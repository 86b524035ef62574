"""Shared fixtures: synthetic GGUF models (built once per session) and the real test model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from reference_worker import models, synthetic

# CI (HYPOTHESIS_PROFILE=ci, set by .ci/run) replays the same examples every run, so a red CI is
# a change's doing; elsewhere each run explores new ones.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def synthetic_models(tmp_path_factory):
    """`build(arch="qwen2", quant="mixed", seed=0) -> Path`: a synthetic GGUF, made once per session."""
    cache: dict[tuple, Path] = {}
    folder = tmp_path_factory.mktemp("synthetic")

    def build(arch: str = "qwen2", quant: str = "mixed", seed: int = 0) -> Path:
        key = (arch, quant, seed)
        if key not in cache:
            cache[key] = synthetic.build(folder / f"{arch}-{quant}-{seed}.gguf", arch, quant, seed)
        return cache[key]

    return build


@pytest.fixture(scope="session")
def synthetic_model(synthetic_models) -> Path:
    """A qwen2-style synthetic model with every weight type (the default of `synthetic_models`)."""
    return synthetic_models()


@pytest.fixture(scope="session")
def real_model_path() -> Path:
    """The real Qwen2.5 test model, assembled and cached by reference_worker.models."""
    try:
        return models.real_model_path()
    except Exception as e:  # noqa: BLE001 - no index, no disk: the test cannot run here
        pytest.skip(f"real model unavailable: {e}")


@pytest.fixture(scope="session", params=["numpy", pytest.param("cuda", marks=pytest.mark.cuda)])
def real_engine(request, real_model_path):
    """The real model loaded once per session on each backend: the same checks hold for both."""
    from reference_worker.cuda import cuda_unavailable_reason
    from reference_worker.engine import Engine

    if request.param == "cuda" and (reason := cuda_unavailable_reason()) is not None:
        pytest.skip(f"CUDA backend unavailable: {reason}")
    engine = Engine.load(real_model_path, backend=request.param)
    yield engine
    engine.close()
