"""The gguf-bpe tokenizer and the streaming detokenizer (M0-W-1360, M0-W-1362).

Properties run on a synthetic model (fast, always) and on the real Qwen2.5 model (real_model).
An independent oracle, a direct reading of byte-level BPE with the `regex` package, checks the
encoder; tests/test_tokenizer_parity.py checks it against llama.cpp's own output.
"""
from __future__ import annotations

import regex
import pytest
from gguf import GGUFReader, TokenType
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reference_worker import synthetic
from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.gguf_file import GGUFFile
from reference_worker.tokenizer import (END_OF_GENERATION_TEXTS, PRE_TOKENIZER_SPLITS, StreamDecoder, Tokenizer,
                                        bytes_to_unicode)

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Text that leans on the tokenizer's hard parts: specials, whitespace runs, contractions, digits.
tricky_text = st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from(QWEN_SPECIALS + ["'s", "'LL", " \t", "\r\n", "  \n ", "12345",
                                                                   "👨‍👩‍👧", "é", "e\u0301", "\u3000"])),
    max_size=8,
).map("".join)


class ReferenceBPE:
    """Byte-level BPE as the algorithm reads: split out specials, split by the regex, merge by rank."""

    def __init__(self, metadata: dict) -> None:
        tokens, types = metadata["tokenizer.ggml.tokens"], metadata["tokenizer.ggml.token_type"]
        self.ids = {text: i for i, text in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ", 1)): rank for rank, m in enumerate(metadata["tokenizer.ggml.merges"])}
        specials = sorted((t for t, k in zip(tokens, types)
                           if k in (TokenType.CONTROL, TokenType.USER_DEFINED) or t in END_OF_GENERATION_TEXTS),
                          key=len, reverse=True)
        self.specials = regex.compile("(" + "|".join(map(regex.escape, specials)) + ")")
        self.split = regex.compile(PRE_TOKENIZER_SPLITS[metadata["tokenizer.ggml.pre"]])
        self.alphabet = bytes_to_unicode()

    def encode(self, text: str) -> list[int]:
        ids = []
        for i, part in enumerate(self.specials.split(text)):
            if i % 2:
                ids.append(self.ids[part])
                continue
            for word in self.split.findall(part):
                ids += [self.ids[piece] for piece in self.merge([self.alphabet[b] for b in word.encode()])]
        return ids

    def merge(self, pieces: list[str]) -> list[str]:
        while len(pieces) > 1:
            rank, i = min((self.ranks.get(pair, float("inf")), i) for i, pair in enumerate(zip(pieces, pieces[1:])))
            if rank == float("inf"):
                return pieces
            pieces[i:i + 2] = [pieces[i] + pieces[i + 1]]
        return pieces


@pytest.fixture(scope="module")
def synthetic_path(tmp_path_factory):
    return synthetic.build(tmp_path_factory.mktemp("tok") / "tiny.gguf", arch="qwen2", quant="F32", seed=0)


@pytest.fixture(scope="module", params=["synthetic", pytest.param("real", marks=pytest.mark.real_model)])
def model_path(request, synthetic_path):
    if request.param == "synthetic":
        return synthetic_path
    from reference_worker.models import real_model_path
    return real_model_path()


@pytest.fixture(scope="module")
def tokenizer(model_path) -> Tokenizer:
    return Tokenizer.from_gguf(model_path)


@pytest.fixture(scope="module")
def reference(model_path) -> ReferenceBPE:
    return ReferenceBPE(GGUFFile.open(model_path).metadata)


@given(text=tricky_text)
def test_decode_inverts_encode(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text, add_special=False)) == text


@given(text=tricky_text)
def test_encode_matches_the_reference_bpe(tokenizer, reference, text):
    assert tokenizer.encode(text, add_special=False) == reference.encode(text)


@pytest.fixture(scope="module")
def special_ids(tokenizer) -> set[int]:
    return {i for i in range(tokenizer.vocab_size) if tokenizer.token_bytes(i).startswith(b"<|")}


@given(text=st.text(max_size=40).filter(lambda t: "<|" not in t and "<tool_call>" not in t))
def test_plain_text_never_yields_special_tokens(tokenizer, special_ids, text):
    assert not special_ids & set(tokenizer.encode(text, add_special=False))


@pytest.mark.parametrize("special", QWEN_SPECIALS)
def test_special_tokens_in_text_are_single_ids(tokenizer, special):
    ids = tokenizer.encode(f"a{special}b", add_special=False)
    assert len(ids) == 3 and tokenizer.decode(ids[1:2]) == special


def test_end_of_generation_ids_are_eos_and_turn_ends(tokenizer):
    by_text = {tokenizer.decode([i]): i for i in tokenizer.eos_ids}
    assert tokenizer.eos_id in tokenizer.eos_ids
    assert {"<|im_end|>", "<|endoftext|>"} <= by_text.keys()


def test_bos_follows_the_metadata(tokenizer):
    assert tokenizer.add_bos is False  # both models say tokenizer.ggml.add_bos_token = false
    assert tokenizer.bos_id is not None and tokenizer.encode("hi") == tokenizer.encode("hi", add_special=False)


def test_add_bos_and_eos_when_the_metadata_asks(synthetic_path):
    metadata = {**GGUFFile.open(synthetic_path).metadata,
                "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": True}
    tok = Tokenizer.from_metadata(metadata)
    plain = tok.encode("hi", add_special=False)
    assert tok.encode("hi") == [tok.bos_id, *plain, tok.eos_id]
    assert tok.encode("") == [tok.bos_id, tok.eos_id]


def test_a_gguf_reader_gives_the_same_tokenizer(synthetic_path):
    text = "Hello <|im_start|>wörld 你好 🎉 don't  x"
    from_reader = Tokenizer.from_gguf(GGUFReader(synthetic_path))
    from_path = Tokenizer.from_gguf(synthetic_path)
    assert from_reader.encode(text) == from_path.encode(text)
    assert from_reader.eos_ids == from_path.eos_ids and from_reader.vocab_size == from_path.vocab_size


# --- streaming detokenizer (M0-W-1362, M0-W-1824) ------------------------------------------

def stream(tokenizer, ids: list[int]) -> tuple[list[str], bytes]:
    """The pieces a StreamDecoder gives for ids, and the bytes it holds back at the end."""
    decoder = StreamDecoder(tokenizer)
    return [decoder.push(i) for i in ids], decoder.pending


class ByteTokens:
    """A stand-in tokenizer whose token i is the i-th of some byte strings."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.token_bytes = chunks.__getitem__


@st.composite
def token_byte_streams(draw) -> list[bytes]:
    """Valid UTF-8 mixed with arbitrary bytes (as a random-weights model emits), cut into tokens
    at arbitrary points, code points included."""
    parts = draw(st.lists(st.one_of(st.text(max_size=6).map(str.encode), st.binary(max_size=4)), max_size=10))
    data = b"".join(parts)
    cuts = sorted(draw(st.sets(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=500)
@given(chunks=token_byte_streams())
@example(chunks=[b"\xed\xa0"])  # a surrogate's start: held, not sent
def test_the_stream_buffer_emits_complete_code_points_at_once_and_drops_what_can_never_decode(chunks):
    decoder = StreamDecoder(ByteTokens(chunks))
    sent, received = b"", ""
    for token_id, chunk in enumerate(chunks):
        piece = decoder.push(token_id)
        piece.encode("utf-8")  # strict: no lone surrogate, nothing a JSON/SSE writer could not send
        sent += chunk
        received += piece
        # At most the start of one code point is held back; everything before it is out. (The
        # start of a UTF-8 surrogate, ED A0-BF, is held too until the next byte; never sent.)
        held = decoder.pending
        assert len(held) < 4 and sent.endswith(held)
        assert received == sent[:len(sent) - len(held)].decode("utf-8", errors="ignore")
        if held:
            with pytest.raises(UnicodeDecodeError):
                held.decode("utf-8")
    assert received == b"".join(chunks).decode("utf-8", errors="ignore")
    # No replacement character that the bytes did not spell themselves.
    assert received.count("\ufffd") <= sent.count("\ufffd".encode())


@given(data=st.data())
def test_stream_pieces_join_to_decode_of_any_ids_without_undecodable_bytes(tokenizer, data):
    ids = data.draw(st.lists(st.integers(0, tokenizer.vocab_size - 1), max_size=30))
    pieces, _ = stream(tokenizer, ids)
    assert "".join(pieces) == tokenizer.decode(ids, errors="ignore")


@given(text=tricky_text)
def test_stream_of_encoded_text_gives_the_text_back(tokenizer, text):
    pieces, held = stream(tokenizer, tokenizer.encode(text, add_special=False))
    assert "".join(pieces) == text and held == b""  # so no piece adds a U+FFFD the text lacks


def test_a_code_point_split_over_byte_tokens_comes_out_whole(tokenizer):
    byte_token = {tokenizer.token_bytes(i): i for i in range(tokenizer.vocab_size)}
    ids = [byte_token[bytes([b])] for b in "🎉".encode()]
    assert stream(tokenizer, ids) == (["", "", "", "🎉"], b"")
    # Cut short at the end: the two bytes can never become a code point, so nothing is sent.
    assert stream(tokenizer, ids[:2]) == (["", ""], "🎉".encode()[:2])
    # A byte that cannot start or continue a code point is dropped where it stands.
    stray = [byte_token[b"\xff"], byte_token[b"a"], *ids[:2], byte_token[b"b"], *ids]
    assert stream(tokenizer, stray) == (["", "a", "", "", "b", "", "", "", "🎉"], b"")


# --- refusals --------------------------------------------------------------------------------

@pytest.mark.parametrize("change, words", [
    ({"tokenizer.ggml.model": "bert"}, "neither byte-level BPE ('gpt2') nor SentencePiece"),
    ({"tokenizer.ggml.model": "llama"}, "has no merge table"),  # read as SentencePiece, it has merges
    ({"tokenizer.ggml.pre": "falcon"}, "pre-tokenizer 'falcon' is not supported"),
    ({"tokenizer.ggml.tokens": []}, "tokenizer.ggml.tokens"),
    ({"tokenizer.ggml.token_type": [1, 2]}, "token_type"),
    ({"tokenizer.ggml.merges": ["nospace"]}, "merges must be"),
    ({"tokenizer.ggml.merges": ["Ġ zzzunknown"]}, "merges do not fit the vocabulary"),
    ({"tokenizer.ggml.eos_token_id": 10**9}, "eos_token_id"),
    ({"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.bos_token_id": None}, "BOS/EOS"),
])
def test_unusable_tokenizer_metadata_is_refused(synthetic_path, change, words):
    metadata = {**GGUFFile.open(synthetic_path).metadata, **change}
    with pytest.raises(WorkerError) as error:
        Tokenizer.from_metadata(metadata)
    assert error.value.code == ErrorCode.MODEL_LOAD_FAILED and words in error.value.message


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    path = tmp_path / "not.gguf"
    path.write_bytes(b"definitely not a model")
    with pytest.raises(WorkerError) as error:
        Tokenizer.from_gguf(path)
    assert error.value.code == ErrorCode.MODEL_LOAD_FAILED


@pytest.mark.parametrize("bad_id", [-1, 10**6])
def test_ids_outside_the_vocabulary_are_refused(tokenizer, bad_id):
    with pytest.raises(WorkerError) as error:
        tokenizer.decode([bad_id])
    assert error.value.code == ErrorCode.INVALID_REQUEST


# --- the real model --------------------------------------------------------------------------

@pytest.mark.real_model
def test_real_model_tokenizer_matches_its_published_shape():
    from reference_worker.models import real_model_path
    tok = Tokenizer.from_gguf(real_model_path())
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.add_bos) == (151936, 151643, 151645, False)
    # DESIGN.md: measured with llama.cpp and HF transformers on an H100.
    assert tok.encode("Write a haiku about GPU computing") == [7985, 264, 6386, 38242, 911, 22670, 24231]
