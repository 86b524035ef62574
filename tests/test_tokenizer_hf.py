"""The hf-json tokenizer (M0-W-1360, M0-W-1361, M0-W-1821) and the tokenizer.json export of a
GGUF vocabulary.

The export is checked against the gguf-bpe backend it mirrors; the hf-json backend against
GPT-OSS's o200k encoding as OpenAI's own tokenizer encodes it (tests/goldens/o200k_vectors.json,
made by tests/goldens/make_o200k_vectors.py), with a tokenizer.json built here from the same
o200k data, and against bad files.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from importlib import metadata
from pathlib import Path

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
from reference_worker.tokenizer_hf import (HFJsonTokenizer, encoding_metadata, encoding_tokenizer_json,
                                           read_tiktoken_ranks, tokenizer_json, write_tokenizer_json)

GOLDENS = Path(__file__).parent / "goldens"
O200K = json.loads((GOLDENS / "o200k_vectors.json").read_text(encoding="utf-8"))
GPT4O = json.loads((GOLDENS / "gpt4o_vectors.json").read_text(encoding="utf-8"))
GPT4O_CATEGORIES = sorted({v["category"] for v in GPT4O["vectors"]})
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


# --- conformance vectors: GPT-OSS's o200k encoding (M0-W-1821) ---------------------------------

@pytest.fixture(scope="module")
def o200k_ranks() -> dict[bytes, int]:
    """o200k_base.tiktoken as the `bpe-openai` package ships it, the data the goldens were made from."""
    data = next(f for f in metadata.files("bpe-openai") if f.name == "o200k_base.tiktoken.gz").locate()
    assert hashlib.sha256(gzip.decompress(data.read_bytes())).hexdigest() == O200K["provenance"]["data_sha256"]
    return read_tiktoken_ranks(data)


@pytest.fixture(scope="module")
def o200k(o200k_ranks, tmp_path_factory) -> HFJsonTokenizer:
    """The hf-json backend on a tokenizer.json built from the o200k data, with the golden file's
    special tokens and split pattern."""
    path = tmp_path_factory.mktemp("o200k") / "tokenizer.json"
    path.write_text(encoding_tokenizer_json(o200k_ranks, O200K["special_tokens"], O200K["pattern"]), encoding="utf-8")
    return HFJsonTokenizer.from_file(path, O200K["n_vocab"])


def test_the_o200k_vectors_cover_what_m0_w_1821_asks():
    vectors = O200K["vectors"]
    assert 20 <= len(vectors) <= 30
    assert {"basic", "special", "multibyte", "edge"} <= {v["category"] for v in vectors}
    assert "" in (v["text"] for v in vectors) and max(len(v["text"]) for v in vectors) > 5000
    written = {i for v in vectors for i in v["ids"]}
    assert {O200K["special_tokens"][t] for t in ("<|startoftext|>", "<|endoftext|>", "<|return|>", "<|start|>",
                                                "<|end|>", "<|message|>", "<|channel|>", "<|call|>")} <= written
    assert any(len(v["text"].encode("utf-8")) > len(v["text"]) for v in vectors)  # multibyte UTF-8


@pytest.mark.parametrize("vector", O200K["vectors"], ids=lambda v: v["description"])
def test_hf_json_reproduces_the_o200k_vectors(o200k, vector):
    assert o200k.encode(vector["text"]) == vector["ids"]
    assert o200k.encode(vector["text"], add_special=False) == vector["ids"]  # nothing added: no BOS for gpt-oss
    assert o200k.decode(vector["ids"]) == vector["decoded"]
    decoder = StreamDecoder(o200k)
    assert "".join(decoder.push(i) for i in vector["ids"]) == vector["decoded"] and not decoder.pending


def test_o200k_metadata_and_end_of_generation(o200k):
    assert (o200k.vocab_size, o200k.bos_id, o200k.eos_id) == (O200K["n_vocab"], None, None)  # no GGUF metadata here
    # As in llama.cpp: harmony's stops after an assistant action, and <|endoftext|>; not <|end|>,
    # which closes a message (the analysis before the final answer), though harmony stops there.
    actions, endoftext = set(O200K["stop_tokens_for_assistant_actions"]), O200K["special_tokens"]["<|endoftext|>"]
    assert o200k.eos_ids == actions | {endoftext}
    assert set(O200K["stop_tokens"]) - o200k.eos_ids == {O200K["special_tokens"]["<|end|>"]}


# --- the GGUF's own vocabulary on a gpt-oss file: gguf-bpe with llama.cpp's gpt-4o split ---------

@pytest.fixture(scope="module")
def gpt_oss_vocabulary(o200k_ranks) -> Tokenizer:
    """gguf-bpe on the tokenizer metadata of a gpt-oss GGUF (as make_gpt4o_vectors.py writes it)."""
    specials = O200K["special_tokens"]
    return Tokenizer.from_metadata(encoding_metadata(o200k_ranks, specials, "gpt-4o", bos_id=specials["<|startoftext|>"],
                                                     eos_id=specials["<|return|>"]))


@pytest.mark.parametrize("category", GPT4O_CATEGORIES)
def test_gguf_bpe_on_a_gpt_oss_vocabulary_agrees_with_llama_cpp(gpt_oss_vocabulary, category):
    vectors = [v for v in GPT4O["vectors"] if v["category"] == category]
    wrong = [v["text"] for v in vectors if gpt_oss_vocabulary.encode(v["text"]) != v["ids"]]
    assert not wrong, f"{len(wrong)} of {len(vectors)} {category} strings tokenize differently, e.g. {wrong[:3]!r}"


def test_gpt_oss_end_of_generation_agrees_with_llama_cpp(gpt_oss_vocabulary):
    assert gpt_oss_vocabulary.vocab_size == GPT4O["vocab_size"] == O200K["n_vocab"]
    assert gpt_oss_vocabulary.eos_ids == set(GPT4O["eog_ids"])
    assert len(GPT4O["vectors"]) > 1000 and len(GPT4O_CATEGORIES) >= 12


# --- parity on the real model: its vocabulary exported, then read back as hf-json --------------

@pytest.mark.real_model
def test_a_tokenizer_json_exported_from_the_real_model_agrees_with_llama_cpp(real_model_path, tmp_path):
    golden = json.loads((GOLDENS / "tokenizer_vectors.json").read_text(encoding="utf-8"))
    gguf = GGUFFile.open(real_model_path)
    path = write_tokenizer_json(gguf, tmp_path / "tokenizer.json")
    hf_json = HFJsonTokenizer.from_file(path, gguf.tensor("token_embd.weight").shape[0], gguf.metadata)
    vectors = golden["vectors"]
    assert len(vectors) >= 2000 and hf_json.vocab_size == golden["vocab_size"]
    wrong = [v["text"] for v in vectors if hf_json.encode(v["text"]) != v["ids"]]
    assert not wrong, f"{len(wrong)} of {len(vectors)} strings tokenize differently, e.g. {wrong[:3]!r}"
    wrong = [v["text"] for v in vectors if hf_json.decode(v["ids"]) != v.get("decoded", v["text"])]
    assert not wrong, f"{len(wrong)} of {len(vectors)} id lists decode differently, e.g. {wrong[:3]!r}"
    assert hf_json.bos_id == golden["bos_id"] and hf_json.eos_ids == set(golden["eog_ids"])
