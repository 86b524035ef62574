"""Teacher-forced agreement with llama.cpp on the real model (issue 3, "Must show").

tests/goldens/logit_goldens.json holds, per prompt of 64 tokens, llama.cpp's top-1/top-2 ids and
their logit margin after every prefix (made by tests/goldens/make_logit_goldens.py). Where
llama.cpp's margin is clear (>= 0.5) our top-1 must be its top-1 at 99% of positions or more.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

GOLDENS = Path(__file__).parent / "goldens" / "logit_goldens.json"
CLEAR_MARGIN = 0.5
REQUIRED_AGREEMENT = 0.99
# llama.cpp's CPU path rounds activations to 8 bits for its dot products; we do not, so logits
# differ a little (measured: mean 0.07, largest 0.5 over the top-5 entries of every row).
TOP5_MEAN_TOLERANCE = 0.15
TOP5_MAX_TOLERANCE = 1.0


def agreement(logits: np.ndarray, rows: dict) -> tuple[int, int]:
    """(agreeing, compared) over the positions where llama.cpp's top-1/top-2 margin is clear."""
    ours = np.argmax(logits, axis=1)
    clear = np.asarray(rows["margin"]) >= CLEAR_MARGIN
    return int((ours[clear] == np.asarray(rows["top1"])[clear]).sum()), int(clear.sum())


def top5_differences(logits: np.ndarray, rows: dict) -> np.ndarray:
    """|our logit - llama.cpp's| for llama.cpp's five best tokens at every position."""
    return np.abs(np.take_along_axis(logits, np.asarray(rows["top5"]), axis=1) - np.asarray(rows["top5_logits"]))


@pytest.fixture(scope="module")
def goldens() -> dict:
    if not GOLDENS.exists():
        pytest.skip(f"{GOLDENS} has not been generated (tests/goldens/make_logit_goldens.py)")
    return json.loads(GOLDENS.read_text())


@pytest.mark.real_model
@pytest.mark.slow
def test_top1_agrees_with_llama_cpp_where_its_margin_is_clear(real_engine, goldens):
    prompts = goldens["prompts"]
    assert len(prompts) >= 8 and all(len(p["ids"]) == 64 for p in prompts)
    logits = {p["name"]: real_engine.score(p["ids"]) for p in prompts}
    per_prompt = {p["name"]: agreement(logits[p["name"]], p) for p in prompts}
    agreeing = sum(a for a, _ in per_prompt.values())
    compared = sum(n for _, n in per_prompt.values())
    assert compared > 0
    assert agreeing / compared >= REQUIRED_AGREEMENT, f"{agreeing}/{compared} agree; per prompt: {per_prompt}"
    differences = np.concatenate([top5_differences(logits[p["name"]], p).ravel() for p in prompts])
    assert differences.mean() < TOP5_MEAN_TOLERANCE and differences.max() < TOP5_MAX_TOLERANCE


@pytest.mark.real_model
def test_haiku_teacher_forced_agrees_with_llama_cpp(real_engine, goldens):
    rows = goldens["haiku"]["teacher_forced"]
    agreeing, compared = agreement(real_engine.score(rows["ids"]), rows)
    assert compared > 0 and agreeing == compared
