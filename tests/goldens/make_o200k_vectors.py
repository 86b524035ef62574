"""Regenerate tests/goldens/o200k_vectors.json: GPT-OSS's o200k encoding of 28 texts (M0-W-1821).

The oracle is OpenAI's own tokenizer for gpt-oss, the `openai-harmony` package (its Rust
tiktoken, encoding "HarmonyGptOss" = o200k_base plus the harmony special tokens), run offline:
it reads o200k_base.tiktoken from the folder TIKTOKEN_ENCODINGS_BASE names and refuses a file
whose sha256 is not the published one. The file comes from the `bpe-openai` package, which
ships it (gzip); `bpe-openai`'s own encoder, a second implementation, must agree on every text
without special tokens. Each text is encoded with every special token recognised
(allowed_special="all") and decoded again. test_tokenizer_hf.py builds a tokenizer.json from
the same data and checks that the hf-json backend reproduces every vector.

    python tests/goldens/make_o200k_vectors.py [--out PATH]   # needs the goldens and dev extras
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from goldens_common import write_json

N_VOCAB = 201_088  # gpt-oss-20b's token table: the harmony encoding's ids below it are the model's

TEXTS = [
    ("edge", "the empty string", ""),
    ("basic", "plain English", "The quick brown fox jumps over the lazy dog."),
    ("basic", "punctuation after a word", "Hello, world!"),
    ("contractions", "contractions in both cases, kept on the word", "I'm sure they'll say it's FINE; we've DONE it, you'd agree."),
    ("digits", "digits in groups of at most three", "12345678901234567890 3.14159 -273.15 1,234,567"),
    ("whitespace", "runs of spaces, tabs and newlines", "  leading\n\n\ttabs and  double  spaces  \n"),
    ("whitespace", "CRLF line ends", "line one\r\nline two\r\n\r\n"),
    ("whitespace", "non-ASCII spaces", "\u00a0nbsp\u3000ideographic space\u2028line separator"),
    ("code", "Python source", "def forward(self, x):\n    return self.norm(x) * self.weight\n"),
    ("code", "slashes, which o200k keeps on punctuation runs", "path/to/file.py and https://example.com/a/b?c=d"),
    ("multibyte", "Chinese and Japanese (3-byte UTF-8)", "你好，世界！言語モデルは次の単語を予測します。"),
    ("multibyte", "Korean", "한국어 문장도 토큰화됩니다."),
    ("multibyte", "Cyrillic", "Привет, мир! Съешь же ещё этих мягких французских булок."),
    ("multibyte", "Arabic", "مرحبا بالعالم"),
    ("multibyte", "Devanagari: combining vowel signs belong to the word", "नमस्ते दुनिया, हिन्दी भाषा"),
    ("multibyte", "accented capitals and lower case", "naïve CAFÉs Ärger ÉCOLE école"),
    ("multibyte", "combining marks after a letter", "e\u0301 and A\u030a against \u00e9 and \u00c5"),
    ("multibyte", "emoji with modifiers and joiners (4-byte UTF-8)", "😀👍🏽👨‍👩‍👧‍👦🏳️‍🌈 Great job! 🎉"),
    ("multibyte", "supplementary-plane ideographs", "𠮷野家の𩸽定食"),
    ("multibyte", "letter-like symbols and numbers", "ℌ𝔢𝔩𝔩𝔬 ①②③ ½"),
    ("special", "begin and end of text in the text", "<|startoftext|>Hello<|endoftext|>"),
    ("special", "a harmony turn written out", "<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant"),
    ("special", "a final answer that returns (an end-of-generation token)", "<|channel|>final<|message|>4<|return|>"),
    ("special", "a tool call with a constrained format", "<|start|>assistant to=functions.get<|channel|>commentary <|constrain|>json<|message|>{\"x\": 1}<|call|>"),
    ("special", "reserved tokens, the first and the last of the model", "<|reserved_200013|> <|reserved_201087|>"),
    ("special", "look-alikes that are ordinary text", "<|notaspecial|> <|endoftext <endoftext|> |> <|START|>"),
]
LONG_REPEATS = 8  # the long vector: every text above, in order, this many times (over 5,000 characters)


def o200k_data_file() -> Path:
    """bpe-openai's o200k_base.tiktoken.gz."""
    return next(f for f in metadata.files("bpe-openai") if f.name == "o200k_base.tiktoken.gz").locate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "o200k_vectors.json")
    args = parser.parse_args(argv)

    import bpe_openai
    import openai_harmony

    data = gzip.decompress(o200k_data_file().read_bytes())
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "o200k_base.tiktoken").write_bytes(data)
        os.environ["TIKTOKEN_ENCODINGS_BASE"] = folder  # read here, never downloaded
        harmony = openai_harmony.load_harmony_encoding(openai_harmony.HarmonyEncodingName.HARMONY_GPT_OSS)
    second = bpe_openai.get_encoding("o200k_base")

    def encode(text: str) -> list[int]:
        return harmony.encode(text, allowed_special="all")

    conversation = openai_harmony.Conversation.from_messages([
        openai_harmony.Message.from_role_and_content(openai_harmony.Role.SYSTEM, "You are a terse assistant."),
        openai_harmony.Message.from_role_and_content(openai_harmony.Role.USER, "Say hi in Japanese: こんにちは?"),
    ])
    rendered = harmony.render_conversation_for_completion(conversation, openai_harmony.Role.ASSISTANT)
    texts = [*TEXTS, ("special", "a conversation as openai-harmony renders it for completion", harmony.decode(rendered)),
             ("edge", "a long text", "".join(text for _, _, text in TEXTS) * LONG_REPEATS)]
    vectors, cross_checked = [], 0
    for category, description, text in texts:
        ids = encode(text)
        if "<|" not in text:
            assert second.encode_ordinary(text) == ids, f"bpe-openai disagrees on {text[:40]!r}"
            cross_checked += 1
        vectors.append({"category": category, "description": description, "text": text, "ids": ids,
                        "decoded": harmony.decode(ids)})
    assert vectors[-2]["ids"] == rendered and len(vectors[-1]["text"]) > 5000

    specials = sorted((encode(text)[0], text) for text in harmony.special_tokens_set)
    golden = {
        "provenance": {
            "tool": "openai-harmony", "version": metadata.version("openai-harmony"),
            "encoding": harmony.name,
            "data": f"o200k_base.tiktoken from bpe-openai {metadata.version('bpe-openai')}",
            "data_sha256": hashlib.sha256(data).hexdigest(),
            "cross_check": f"bpe-openai's encoder (o200k_base) gives the same ids for the {cross_checked} texts "
                           "without special tokens",
            "command": "python tests/goldens/make_o200k_vectors.py",
            "how": "ids = encode(text, allowed_special='all'); decoded = decode(ids)",
        },
        "pattern": bpe_openai.registry.o200k_base()["pat_str"],  # the split openai-harmony compiles in too
        "n_vocab": N_VOCAB,
        # Every special token of the encoding that is a row of the model (harmony also names
        # <|reserved_201088|>, one past gpt-oss-20b's 201,088 rows).
        "special_tokens": {text: i for i, text in specials if i < N_VOCAB},
        "stop_tokens": sorted(harmony.stop_tokens()),
        "stop_tokens_for_assistant_actions": sorted(harmony.stop_tokens_for_assistant_actions()),
        "vectors": vectors,
    }
    write_json(args.out, golden)
    print(f"{len(vectors)} vectors, {cross_checked} cross-checked with bpe-openai -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
