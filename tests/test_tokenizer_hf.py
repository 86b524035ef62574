"""The hf-json tokenizer (M0-W-1360, M0-W-1361) and the tokenizer.json export of a GGUF vocabulary.

The export is checked against the gguf-bpe backend it mirrors; the hf-json backend against the
`tokenizers` library's own reading of the same file and against bad files.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from gguf import TokenType
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import WordLevel

from reference_worker.engine import Engine, SamplingParams
from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.gguf_file import GGUFFile
from reference_worker.tokenizer import StreamDecoder, Tokenizer
from reference_worker.tokenizer_hf import HFJsonTokenizer, tokenizer_json, write_tokenizer_json

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


# --- selection (M0-W-1360) and bad files: MODEL_LOAD_FAILED naming the problem -----------------

@pytest.fixture
def model_dir(synthetic_model, tmp_path):
    """A folder with a copy of the synthetic model, for a tokenizer.json to lie beside."""
    (tmp_path / synthetic_model.name).write_bytes(synthetic_model.read_bytes())
    return tmp_path / synthetic_model.name


def test_a_tokenizer_json_beside_the_model_selects_hf_json(model_dir):
    gguf_bpe = Engine.load(model_dir)
    assert gguf_bpe.tokenizer_kind == "gguf-bpe"  # none beside it: the GGUF's own vocabulary
    write_tokenizer_json(model_dir, model_dir.parent / "tokenizer.json")
    hf_json = Engine.load(model_dir)
    assert hf_json.tokenizer_kind == "hf-json" and isinstance(hf_json.tokenizer, HFJsonTokenizer)
    assert hf_json.tokenize("hello <|im_end|>") == gguf_bpe.tokenize("hello <|im_end|>")
    prompt = "言語 hello"
    steps = [[(s.token_id, s.text) for s in engine.generate(prompt, 12, SamplingParams(temperature=1.0, seed=5))]
             for engine in (gguf_bpe, hf_json)]
    assert steps[0] == steps[1] and len(steps[1]) > 4


def test_a_tokenizer_json_named_by_path_selects_hf_json(synthetic_model, exported):
    assert Engine.load(synthetic_model, tokenizer_json=exported[1]).tokenizer_kind == "hf-json"


def _vocabulary_variant(metadata, tokens):
    return {**metadata, "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": metadata["tokenizer.ggml.token_type"][:len(tokens)]
            + [TokenType.CONTROL] * (len(tokens) - len(metadata["tokenizer.ggml.token_type"]))}


def bad_files(metadata):
    """(file text, words the error message must hold) for tokenizer.json files that must be refused."""
    tokens = metadata["tokenizer.ggml.tokens"]
    word_level = HFTokenizer(WordLevel({"a": 0, "b": 1}, unk_token="a")).to_str()
    swapped = tokens[:]
    swapped[300], swapped[301] = swapped[301], swapped[300]
    return {
        "not JSON": ('{"model": {"type": "BPE"', "is not JSON"),
        "not a tokenizer": ('{"model": {"type": "Nonsense"}}', "not a tokenizer the tokenizers library loads"),
        "empty": ("", "is not JSON"),
        "not byte-level BPE": (word_level, "is not byte-level BPE"),
        "ids beyond the token table": (tokenizer_json(Tokenizer.from_metadata(
            _vocabulary_variant(metadata, tokens + ["<|extra|>"]))), f"defines token id {len(tokens)}"),
        "texts that differ from the model's": (tokenizer_json(Tokenizer.from_metadata(
            _vocabulary_variant(metadata, swapped))), "2 token(s) differ from the model's own vocabulary"),
    }


@pytest.mark.parametrize("case", ["not JSON", "not a tokenizer", "empty", "not byte-level BPE",
                                  "ids beyond the token table", "texts that differ from the model's"])
def test_a_tokenizer_json_that_does_not_parse_or_fit_is_model_load_failed(model_dir, case):
    text, words = bad_files(GGUFFile.open(model_dir).metadata)[case]
    (model_dir.parent / "tokenizer.json").write_text(text, encoding="utf-8")
    with pytest.raises(WorkerError) as caught:
        Engine.load(model_dir)
    assert caught.value.code == ErrorCode.MODEL_LOAD_FAILED
    assert "tokenizer.json" in caught.value.message and words in caught.value.message


def test_the_worker_process_refuses_a_bad_tokenizer_json_with_exit_1(model_dir):
    from test_cli_args import arguments, error_event, run_cli

    (model_dir.parent / "tokenizer.json").write_text('{"model": ', encoding="utf-8")
    result = run_cli(*arguments(model_dir))
    assert result.returncode == 1
    event = error_event(result)
    assert event["code"] == "MODEL_LOAD_FAILED" and "is not JSON" in event["message"]
    assert "Traceback" not in result.stderr


def test_the_worker_process_serves_hf_json_from_the_flag(synthetic_model, exported):
    from worker_process import WorkerProcess, execute, read_events

    worker = WorkerProcess(synthetic_model, "--tokenizer-json", str(exported[1])).wait_ready()
    try:
        assert worker.health()["tokenizer_kind"] == "hf-json"
        assert worker.wait_for_event("model_load_complete")["tokenizer_kind"] == "hf-json"
        response = execute(worker.url, job_id="hf-json-1", prompt="言語 hello", max_tokens=6, temperature=0.0)
        assert response.status_code == 200 and read_events(response)[-1].name == "end"
    finally:
        assert worker.stop() == 0
