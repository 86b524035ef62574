"""The GGUF SentencePiece tokenizer (tokenizer.ggml.model "llama") against llama.cpp.

tests/goldens/spm_goldens.json holds llama.cpp's tokenization of a corpus and its rendering of
every token on the synthetic llama and phi3 models (tests/goldens/make_spm_goldens.py made it);
the models are rebuilt here byte for byte. Properties and refusals run on the same models.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from gguf import TokenType
from hypothesis import example, given
from hypothesis import strategies as st

from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.gguf_file import GGUFFile
from reference_worker.models import sha256_of
from reference_worker.tokenizer import StreamDecoder, Tokenizer
from reference_worker.tokenizer_spm import SpmTokenizer

GOLDEN = json.loads((Path(__file__).parent / "goldens" / "spm_goldens.json").read_text(encoding="utf-8"))
ARCHES = sorted(GOLDEN["models"])
CATEGORIES = sorted({item["category"] for item in GOLDEN["corpus"]})


@pytest.fixture(scope="module", params=ARCHES)
def arch(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def spm_model(synthetic_models, arch) -> Path:
    """The golden's synthetic model of arch, rebuilt; a different build would make the goldens moot."""
    path = synthetic_models(arch, GOLDEN["quant"], GOLDEN["seed"])
    assert sha256_of(path) == GOLDEN["models"][arch]["provenance"]["model_sha256"], \
        "the synthetic model changed: regenerate tests/goldens/spm_goldens.json (make_spm_goldens.py)"
    return path


@pytest.fixture(scope="module")
def tokenizer(spm_model) -> SpmTokenizer:
    return Tokenizer.from_gguf(spm_model)


@pytest.fixture(scope="module")
def metadata(spm_model) -> dict:
    return GGUFFile.open(spm_model).metadata


def test_the_corpus_covers_what_the_issue_asks_for():
    assert ARCHES == ["llama", "phi3"] and len(GOLDEN["corpus"]) >= 250
    assert {"latin", "code", "cjk", "emoji", "whitespace", "spaces", "special", "spm-special", "mixed"} \
        <= set(CATEGORIES)
    texts = {item["text"] for item in GOLDEN["corpus"]}
    assert {"", "  a", "a\n\n\nb", "<|user|>\nWhat is 2 + 2?<|end|>\n<|assistant|>\n4<|end|>"} <= texts


@pytest.mark.parametrize("category", CATEGORIES)
def test_ids_agree_with_llama_cpp(arch, tokenizer, category):
    golden = GOLDEN["models"][arch]["ids"]
    cases = [(item["text"], ids) for item, ids in zip(GOLDEN["corpus"], golden) if item["category"] == category]
    wrong = [text for text, ids in cases if tokenizer.encode(text) != ids]
    assert not wrong, f"{len(wrong)} of {len(cases)} {category} texts tokenize differently, e.g. {wrong[:3]!r}"


def test_every_token_renders_as_in_llama_cpp(arch, tokenizer):
    pieces = GOLDEN["models"][arch]["pieces"]
    assert tokenizer.vocab_size == len(pieces)
    wrong = [i for i, piece in enumerate(pieces) if tokenizer.token_bytes(i) != bytes.fromhex(piece)]
    assert not wrong, f"{len(wrong)} tokens render differently, e.g. ids {wrong[:5]}"


def test_vocabulary_metadata_agrees_with_llama_cpp(arch, tokenizer):
    golden = GOLDEN["models"][arch]
    assert tokenizer.kind == "gguf-bpe"  # the spec's kind for a vocabulary embedded in the GGUF
    assert (tokenizer.bos_id, tokenizer.add_bos) == (golden["bos_id"], golden["add_bos"])
    assert tokenizer.eos_ids == set(golden["eog_ids"])


def test_phi3_chat_tokens_and_end_of_generation(synthetic_models):
    tokenizer = Tokenizer.from_gguf(synthetic_models("phi3", GOLDEN["quant"], GOLDEN["seed"]))
    ids = tokenizer.encode("<|user|>\nHi<|end|>\n<|assistant|>\n")
    chat = [tokenizer.encode(text, add_special=False)[0] for text in ("<|user|>", "<|end|>", "<|assistant|>")]
    assert ids[0] == tokenizer.bos_id and chat[0] == ids[1] and chat[1] in ids and ids[-1] == chat[2]
    # Whitespace after Phi-3's chat tokens is dropped (llama.cpp's rstrip for a model named Phi-3).
    assert tokenizer.encode("<|assistant|>\n\n x") == tokenizer.encode("<|assistant|>x")
    assert chat[1] in tokenizer.eos_ids and tokenizer.encode("<|endoftext|>", False)[0] in tokenizer.eos_ids


def test_a_character_split_over_byte_tokens_is_streamed_whole(tokenizer, metadata):
    """M0-W-1824: 日 is not in the vocabulary, so it is spelled <0xE6><0x97><0xA5>."""
    ids = tokenizer.encode("日", add_special=False)
    assert [metadata["tokenizer.ggml.tokens"][i] for i in ids] == ["\u2581", "<0xE6>", "<0x97>", "<0xA5>"]
    decoder = StreamDecoder(tokenizer)
    assert [decoder.push(i) for i in ids] == [" ", "", "", "日"] and decoder.pending == b""
    assert tokenizer.decode(ids[:3], errors="ignore") == " "  # cut short: nothing half-made


# Every special token of both vocabularies has a "<"; without one, a text is all plain pieces.
# A "▁" written in the text comes back as a space, in llama.cpp too (the goldens hold such texts);
# lone surrogates never reach a tokenizer (the server refuses them).
plain_text = st.text(alphabet=st.characters(blacklist_characters="<\u2581", blacklist_categories=("Cs",)),
                     max_size=40)


@pytest.mark.parametrize("name", ["llama", "phi3"])
def test_decode_undoes_encode(synthetic_models, name):
    tokenizer = Tokenizer.from_gguf(synthetic_models(name, GOLDEN["quant"], GOLDEN["seed"]))

    @given(plain_text)
    @example("  two  spaces\n\nand lines")
    @example("日本語 😀 é")
    def check(text):
        ids = tokenizer.encode(text, add_special=False)
        # The space prefix is the one byte decoding adds; every character survives byte fallback.
        assert tokenizer.decode(ids) == (" " + text if text else "")
        assert "".join(map(StreamDecoder(tokenizer).push, ids)) == tokenizer.decode(ids)

    check()


# --- refusals --------------------------------------------------------------------------------

def _without(metadata: dict, key: str) -> dict:
    return {k: v for k, v in metadata.items() if k != key}


def _renamed_byte(metadata: dict) -> dict:
    tokens = list(metadata["tokenizer.ggml.tokens"])
    tokens[tokens.index("<0x7F>")] = "<0x7f>"
    return {**metadata, "tokenizer.ggml.tokens": tokens}


def _repeated(metadata: dict) -> dict:
    tokens = list(metadata["tokenizer.ggml.tokens"])
    tokens[-1] = tokens[-2]
    return {**metadata, "tokenizer.ggml.tokens": tokens}


def _byte_typed(metadata: dict) -> dict:
    types = list(metadata["tokenizer.ggml.token_type"])
    types[-1] = TokenType.BYTE
    return {**metadata, "tokenizer.ggml.token_type": types}


@pytest.mark.parametrize("change, words", [
    (lambda m: _without(m, "tokenizer.ggml.scores"), "tokenizer.ggml.scores is missing"),
    (lambda m: {**m, "tokenizer.ggml.scores": m["tokenizer.ggml.scores"][:-1]}, "scores must hold"),
    (_renamed_byte, "byte token <0x7F> is missing"),
    (lambda m: {**m, "tokenizer.ggml.merges": ["▁ t", "▁t h"]}, "tokenizer.ggml.merges is present"),
    (_repeated, "appears twice"),
    (_byte_typed, "has the byte type but is not spelled <0xNN>"),
    (lambda m: {**m, "tokenizer.ggml.token_type": [1, 2]}, "token_type"),
    (lambda m: {**m, "tokenizer.ggml.bos_token_id": 10**6}, "bos_token_id"),
])
def test_unusable_sentencepiece_metadata_is_refused(metadata, change, words):
    with pytest.raises(WorkerError) as error:
        Tokenizer.from_metadata(change(metadata))
    assert error.value.code == ErrorCode.MODEL_LOAD_FAILED and words in error.value.message


def test_a_phi3_model_needs_the_tokens_llama_cpp_looks_up(synthetic_models):
    metadata = GGUFFile.open(synthetic_models("phi3", GOLDEN["quant"], GOLDEN["seed"])).metadata
    tokens = ["<|nope|>" if t == "<|endoftext|>" else t for t in metadata["tokenizer.ggml.tokens"]]
    with pytest.raises(WorkerError) as error:
        Tokenizer.from_metadata({**metadata, "tokenizer.ggml.tokens": tokens})
    assert error.value.code == ErrorCode.MODEL_LOAD_FAILED and "needs <|endoftext|>" in error.value.message
    # The same vocabulary under another name is not held to Phi-3's rules.
    assert Tokenizer.from_metadata({**metadata, "tokenizer.ggml.tokens": tokens, "general.name": "other"})


def test_defaults_are_sentencepiece_ones(metadata):
    bare = {k: v for k, v in metadata.items() if not k.startswith(("tokenizer.ggml.add_", "tokenizer.ggml.bos",
                                                                       "tokenizer.ggml.eos", "tokenizer.ggml.pad"))}
    tokenizer = Tokenizer.from_metadata(bare)
    assert (tokenizer.bos_id, tokenizer.add_bos, tokenizer.eos_id, tokenizer.add_eos) == (1, True, 2, False)
    no_prefix = Tokenizer.from_metadata({**metadata, "tokenizer.ggml.add_space_prefix": False})
    assert no_prefix.decode(no_prefix.encode("a b", add_special=False)) == "a b"
