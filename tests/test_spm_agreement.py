"""Teacher-forced agreement with llama.cpp on the synthetic llama and phi3 models (issue 15).

tests/goldens/spm_goldens.json holds llama.cpp's top-1/top-2 ids, their margin and the top-1
logit after every prefix of a few token sequences on each model (tests/goldens/make_spm_goldens.py);
one sequence (320 tokens) runs past the sliding window phi3's metadata declares, which llama.cpp
reads and does not apply, and nor do we. Where llama.cpp's margin is clear our top-1 must be its
top-1 at 99.5% of positions or more, on each backend.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_llama_agreement import agreement

from reference_worker.models import sha256_of

GOLDEN = json.loads((Path(__file__).parent / "goldens" / "spm_goldens.json").read_text(encoding="utf-8"))
REQUIRED_AGREEMENT = 0.995
# llama.cpp's CPU path rounds activations to 8 bits for its dot products; we do not (measured on
# these models, NumPy: mean 0.036 and 0.025, largest 0.16 and 0.12 at llama.cpp's top-1 token).
TOP1_MEAN_TOLERANCE = 0.1
TOP1_MAX_TOLERANCE = 0.5


@pytest.fixture(scope="module", params=["numpy", pytest.param("cuda", marks=pytest.mark.cuda)])
def backend(request) -> str:
    from reference_worker.cuda import cuda_unavailable_reason

    if request.param == "cuda" and (reason := cuda_unavailable_reason()) is not None:
        pytest.skip(f"CUDA backend unavailable: {reason}")
    return request.param


@pytest.mark.parametrize("arch", sorted(GOLDEN["models"]))
def test_top1_agrees_with_llama_cpp_where_its_margin_is_clear(synthetic_models, backend, arch):
    from reference_worker.engine import Engine

    golden = GOLDEN["models"][arch]
    path = synthetic_models(arch, GOLDEN["quant"], GOLDEN["seed"])
    assert sha256_of(path) == golden["provenance"]["model_sha256"], "regenerate tests/goldens/spm_goldens.json"
    sequences = golden["sequences"]
    assert max(len(s["ids"]) for s in sequences) > 300 and len(sequences) >= 5
    engine = Engine.load(path, backend=backend)
    try:
        logits = {s["name"]: engine.score(s["ids"]) for s in sequences}
    finally:
        engine.close()
    per_sequence = {s["name"]: agreement(logits[s["name"]], s) for s in sequences}
    agreeing = sum(a for a, _ in per_sequence.values())
    compared = sum(n for _, n in per_sequence.values())
    assert compared >= 200, f"too few clear positions to judge: {per_sequence}"
    assert agreeing / compared >= REQUIRED_AGREEMENT, f"{agreeing}/{compared} agree; per sequence: {per_sequence}"
    differences = np.concatenate([
        np.abs(np.take_along_axis(logits[s["name"]], np.asarray(s["top1"])[:, None], axis=1)[:, 0] - s["top1_logit"])
        for s in sequences])
    assert differences.mean() < TOP1_MEAN_TOLERANCE and differences.max() < TOP1_MAX_TOLERANCE, \
        f"logits differ from llama.cpp's: mean {differences.mean():.3f}, largest {differences.max():.3f}"
