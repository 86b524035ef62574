"""The hf-json tokenizer (M0-W-1360, M0-W-1361) and the tokenizer.json export of a GGUF vocabulary.

The export is checked against the gguf-bpe backend it mirrors; the hf-json backend against the
`tokenizers` library's own reading of the same file and against bad files.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer

from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.gguf_file import GGUFFile
from reference_worker.tokenizer import StreamDecoder, Tokenizer
from reference_worker.tokenizer_hf import HFJsonTokenizer, write_tokenizer_json

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
text_with_specials = st.lists(st.one_of(st.text(max_size=10), st.sampled_from(SPECIALS + [" \n", "é", "😀"])),
                              max_size=6).map("".join)


@pytest.fixture(scope="module")
def synthetic_gguf(synthetic_model) -> GGUFFile:
    return GGUFFile.open(synthetic_model)


@pytest.fixture(scope="module")
def exported(synthetic_gguf, tmp_path_factory):
    """(gguf-bpe tokenizer, path of its exported tokenizer.json, hf-json tokenizer loaded from it)."""
    gguf_bpe = Tokenizer.from_gguf(synthetic_gguf)
    path = write_tokenizer_json(synthetic_gguf, tmp_path_factory.mktemp("hf") / "tokenizer.json")
    return gguf_bpe, path, HFJsonTokenizer.from_file(path, gguf_bpe.vocab_size, synthetic_gguf.metadata)


@settings(max_examples=150, deadline=None)
@given(text=text_with_specials)
def test_the_exported_tokenizer_json_encodes_as_gguf_bpe(exported, text):
    gguf_bpe, path, hf_json = exported
    expected = gguf_bpe.encode(text)
    assert HFTokenizer.from_file(str(path)).encode(text).ids == expected  # the library alone
    assert hf_json.encode(text) == expected
    assert hf_json.decode(expected) == gguf_bpe.decode(expected)


def test_metadata_of_the_hf_json_backend(exported):
    gguf_bpe, _, hf_json = exported
    assert hf_json.kind == "hf-json"
    assert (hf_json.vocab_size, hf_json.bos_id, hf_json.eos_id) == (gguf_bpe.vocab_size, gguf_bpe.bos_id, gguf_bpe.eos_id)
    assert hf_json.eos_ids == gguf_bpe.eos_ids


def test_bos_and_eos_are_added_as_the_metadata_asks(synthetic_gguf, tmp_path):
    metadata = {**synthetic_gguf.metadata, "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": True}
    gguf_bpe = Tokenizer.from_metadata(metadata)
    hf_json = HFJsonTokenizer.from_file(write_tokenizer_json(metadata, tmp_path / "tokenizer.json"),
                                        gguf_bpe.vocab_size, metadata)
    ids = hf_json.encode("hi there")
    assert ids == gguf_bpe.encode("hi there")
    assert ids[0] == gguf_bpe.bos_id and ids[-1] == gguf_bpe.eos_id
    assert hf_json.encode("hi there", add_special=False) == ids[1:-1]


def test_streaming_holds_back_split_code_points(exported):
    _, _, hf_json = exported
    ids = hf_json.encode("言語 😀 ok")
    decoder = StreamDecoder(hf_json)
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) == "言語 😀 ok"
    assert all(piece.encode("utf-8").decode("utf-8") == piece for piece in pieces)
    assert any(piece == "" for piece in pieces)  # the byte-level vocabulary splits a code point here
