"""Tokenizer parity with llama.cpp on the real model (M0-W-1363): 100% on the committed vectors.

The vectors (tests/goldens/tokenizer_vectors.json) are llama.cpp's tokenization of a generated
corpus; tests/goldens/make_tokenizer_vectors.py regenerates them.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from reference_worker.models import MODEL_SHA256
from reference_worker.tokenizer import Tokenizer

pytestmark = pytest.mark.real_model

GOLDEN = json.loads((Path(__file__).parent / "goldens" / "tokenizer_vectors.json").read_text(encoding="utf-8"))
BY_CATEGORY = defaultdict(list)
for vector in GOLDEN["vectors"]:
    BY_CATEGORY[vector["category"]].append(vector)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    from reference_worker.models import real_model_path
    return Tokenizer.from_gguf(real_model_path())


def test_the_vectors_cover_the_corpus_the_spec_asks_for():
    assert GOLDEN["provenance"]["model_sha256"] == MODEL_SHA256
    assert len(GOLDEN["vectors"]) >= 2000
    texts = [v["text"] for v in GOLDEN["vectors"]]
    assert "" in texts and max(map(len, texts)) >= 5000
    assert {"latin", "cjk", "cyrillic", "arabic", "indic", "emoji", "code", "whitespace", "digits",
            "contractions", "special", "long"} <= BY_CATEGORY.keys()


@pytest.mark.parametrize("category", sorted(BY_CATEGORY))
def test_encode_and_decode_agree_with_llama_cpp(tokenizer, category):
    vectors = BY_CATEGORY[category]
    wrong = [v["text"] for v in vectors if tokenizer.encode(v["text"]) != v["ids"]]
    assert not wrong, f"{len(wrong)} of {len(vectors)} {category} strings tokenize differently, e.g. {wrong[:3]!r}"
    wrong = [v["text"] for v in vectors if tokenizer.decode(v["ids"]) != v.get("decoded", v["text"])]
    assert not wrong, f"{len(wrong)} of {len(vectors)} {category} id lists decode differently, e.g. {wrong[:3]!r}"


def test_metadata_agrees_with_llama_cpp(tokenizer):
    assert tokenizer.vocab_size == GOLDEN["vocab_size"]
    assert (tokenizer.bos_id, tokenizer.add_bos) == (GOLDEN["bos_id"], GOLDEN["add_bos"])
    assert tokenizer.eos_ids == set(GOLDEN["eog_ids"])
