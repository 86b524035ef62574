"""Regenerate tests/goldens/tokenizer_vectors.json: llama.cpp's tokenization of a generated corpus.

The corpus is built deterministically (a fixed seed) from hand-written fragments in several
scripts plus random compositions of them; llama.cpp (llama-cpp-python, the `goldens` extra)
tokenizes every string with the real model's vocabulary, recognising special tokens in text and
adding BOS/EOS as the metadata says (add_special=True, parse_special=True), and detokenizes the
ids again with special tokens rendered. test_tokenizer_parity checks our tokenizer against it
(M0-W-1363).

    python tests/goldens/make_tokenizer_vectors.py [--model PATH] [--out PATH]
"""
from __future__ import annotations

import argparse
import ctypes
import random
import sys
from pathlib import Path

from goldens_common import load_llama, provenance, write_json

SEED = 1363

LATIN = [
    "The quick brown fox jumps over the lazy dog.", "Hello, world!", "hello WORLD Hello",
    "Les modèles de langue prédisent le mot suivant.", "Ça va? Où est l'hôtel «Belle Époque»?",
    "Größere Straßen führen über die Brücke, sagte der Bürgermeister.", "¿Qué pasa, señor? ¡Olé!",
    "Zażółć gęślą jaźń.", "Tiếng Việt có nhiều dấu thanh: ả, ẫ, ự.", "Æsir og Ørsted på Åland",
    "naïve café résumé coöperate façade", "İstanbul'da ılık bir gün; ĞÜŞÇÖ", "Ελληνικά: καλημέρα κόσμε",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
]
CJK = [
    "你好，世界！", "言語モデルは次の単語を予測します。", "東京タワーの高さは333メートルです。",
    "中华人民共和国成立于1949年。", "我喜欢用Python写代码。", "한국어 문장도 토큰화됩니다.",
    "ひらがなとカタカナとＡＢＣ全角文字", "「引用」と『二重引用』、句読点。", "𠮷野家の𩸽定食",
    "机器学习（Machine Learning）是人工智能的一个分支。",
]
CYRILLIC = [
    "Привет, мир!", "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Москва — столица России.", "Україна, Ґанок, їжак, єнот", "Здравей, свят! Ћирилица српска",
]
ARABIC = [
    "مرحبا بالعالم", "اللغة العربية جميلة جداً.", "سلام دنیا — فارسی", "שלום עולם", "عدد ١٢٣٤٥٦٧٨٩٠",
]
DEVANAGARI = [
    "नमस्ते दुनिया", "हिन्दी भाषा में लिखा गया वाक्य।", "संस्कृतम् अपि", "क्षत्रिय त्र ज्ञ श्र",
    "বাংলা ভাষা", "தமிழ் மொழி", "ภาษาไทยไม่มีช่องว่าง", "ქართული ენა", "Հայերեն լեզու",
]
EMOJI = [
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇩🇪🇯🇵🇺🇸", "1️⃣#️⃣", "❤️‍🔥", "🧑🏿‍💻", "👩‍❤️‍💋‍👨",
    "Great job! 🎉🎉🎉", "🤖 + 🧠 = 💡", "✔️✅☑️", "🫠🫶🪿", "☕️ ☕", "🐍 Python",
]
CODE = [
    "def forward(self, x):\n    return self.norm(x) * self.weight\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
    "const f = async (x) => { await fetch(`/api/${x}`); };",
    "{\"key\": [1, 2.5, -3e10, null, true], \"nested\": {\"a\": \"b\"}}",
    "<html><body class=\"main\"><p>Hi &amp; bye</p></body></html>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "if x != None and y <= 3:\n        pass\n    elif z:\n        raise ValueError('bad')",
    "ls -la | grep '\\.py$' && echo \"done\" > /dev/null 2>&1",
    "fn main() -> Result<(), Box<dyn Error>> { let v: Vec<u8> = vec![]; Ok(()) }",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares",
    "    \n\t\t/* comment */\r\n    return;\n}\n\n\n",
    "a+=1;b-=2;c*=3;d/=4;e%=5;f<<=1;g>>=2;h&&=i||j",
    "@decorator\nclass Foo(Bar, metaclass=Meta):\n    '''Doc.'''\n",
]
WHITESPACE = [
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", " \n ", "\t \t",
    "a  b", "a   b", "a\tb", "a \tb", "a\t b", "a\nb", "a \n b", "a\n\n\nb", "a\r\nb", "  leading",
    "trailing  ", "\u00a0nbsp\u00a0", "ideographic\u3000space", "thin\u2009space", "en\u2002em\u2003",
    "line\u2028sep", "para\u2029sep", "zero\u200bwidth", "vertical\u000btab", "form\u000cfeed", "next\u0085line",
]
DIGITS = [
    "0", "7", "42", "123", "1234", "12345678901234567890", "3.14159265358979", "-273.15", "1,234,567.89",
    "1e-10", "0x7FFF_FFFF", "+49 (0)30 1234567", "2026-11-22T15:46:34Z", "v1.2.3-rc.4", "10^9+7",
    "٣٤٥", "१२३", "①②③", "½ ¾ ⅞", "Ⅻ", "１２３", "3rd 21st 100th",
]
CONTRACTIONS = [
    "don't", "I'm", "you're", "we've", "he'll", "she'd", "it's", "DON'T", "I'M", "YOU'RE", "WE'VE",
    "HE'LL", "SHE'D", "IT'S", "We'Re", "'s", "'t", "'re", "'ll", "'", "''", "'''", "don’t", "rock'n'roll",
    "the cat's toy", "'sup", "o'clock", "y'all'd've",
]
SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_start|>system\nYou are helpful.<|im_end|>\n",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n", "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
    "<tool_call>{\"name\": \"f\"}</tool_call>", "<|im_start|><|im_start|>", "text<|im_end|>text", " <|im_end|> ",
    "<|im_start", "im_start|>", "<|im_start|", "<|IM_START|>", "< |im_start| >", "<|repo_name|>r<|file_sep|>f.py",
    "[PAD151665]", "<|vision_start|><|image_pad|><|vision_end|>", "<|box_start|>(1,2)<|box_end|>", "<|endoftext|><|endoftext|>",
    "<s>struck</s>", "</s>", "</s >", "<|eot_id|>", "<eos>", "[PAD]",
]
EDGE = [
    "", "a", "A", ".", "\\", "\x00", "\x01\x02\x7f", "\ufeffBOM", "\ufffd", "e\u0301 vs é", "n\u0303",
    "ﬁ ligature", "Å Å", "\U0001d400\U0001d401 math", "\U000e0041 tag", "\ue000 private", "\U0010fffd",
]
POOLS = {
    "latin": LATIN, "cjk": CJK, "cyrillic": CYRILLIC, "arabic": ARABIC, "indic": DEVANAGARI, "emoji": EMOJI,
    "code": CODE, "whitespace": WHITESPACE, "digits": DIGITS, "contractions": CONTRACTIONS, "special": SPECIAL,
    "edge": EDGE,
}
SEPARATORS = ["", " ", "  ", "\n", "\t", ", ", "\n\n", "   ", "\r\n", " \t "]
# Code point ranges to draw random characters from: assigned blocks of many scripts.
RANDOM_RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
                 (0xE00, 0xE5B), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF),
                 (0x2000, 0x206F), (0x2190, 0x23FF), (0x300, 0x36F)]


def random_digits(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40)))


def random_chars(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(1, 30)):
        lo, hi = rng.choice(RANDOM_RANGES)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def composition(rng: random.Random, n_parts: int) -> str:
    """n_parts fragments from random pools, joined by random separators."""
    parts = []
    for _ in range(n_parts):
        parts.append(rng.choice(rng.choice(list(POOLS.values()))))
        parts.append(rng.choice(SEPARATORS))
    return "".join(parts)


def whitespace_run(rng: random.Random) -> str:
    chars = [" ", " ", " ", "\t", "\n", "\r\n", "\u00a0", "\u3000"]
    word = rng.choice(["x", "def", "1", "!", "你", ""])
    return word + "".join(rng.choice(chars) for _ in range(rng.randint(1, 12))) + rng.choice(["x", "y", "(", "9", ""])


def corpus() -> list[tuple[str, str]]:
    """(category, text) pairs, each text once: every fragment alone, then seeded variations and mixtures."""
    rng = random.Random(SEED)
    items = [(name, text) for name, pool in POOLS.items() for text in pool]
    for name, pool in POOLS.items():
        for _ in range(60):  # each fragment with a neighbour from the same pool
            items.append((name, rng.choice(pool) + rng.choice(SEPARATORS) + rng.choice(pool)))
        for _ in range(20):  # case and spacing variants
            text = rng.choice(pool)
            items.append((name, rng.choice([text.upper(), text.lower(), " " + text, text + " ", text * 2])))
    items += [("digits", random_digits(rng)) for _ in range(150)]
    items += [("random-unicode", random_chars(rng)) for _ in range(300)]
    items += [("whitespace", whitespace_run(rng)) for _ in range(150)]
    items += [("mixed", composition(rng, rng.randint(2, 8))) for _ in range(600)]
    items += [("long", composition(rng, rng.randint(200, 600))) for _ in range(8)]
    items += [("long", rng.choice(LATIN) * 200), ("long", " " * 3000), ("long", "\n" * 1000), ("long", "9" * 5000),
              ("long", "你好" * 1500), ("long", "👨‍👩‍👧‍👦" * 300)]
    unique = {}
    for category, text in items:
        unique.setdefault(text, category)
    return [(category, text) for text, category in unique.items()]


def detokenize(vocab, ids: list[int]) -> bytes:
    """llama.cpp's llama_detokenize with special tokens rendered (Llama.detokenize cuts tokens at 32 bytes)."""
    import llama_cpp

    tokens = (llama_cpp.llama_token * len(ids))(*ids)
    size = 64
    while True:
        buffer = (ctypes.c_char * size)()
        n = llama_cpp.llama_detokenize(vocab, tokens, len(ids), buffer, size, False, True)
        if n >= 0:
            return bytes(buffer[:n])
        size = -n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="the real model's GGUF (default: reference_worker.models)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("tokenizer_vectors.json"))
    args = parser.parse_args(argv)
    llm, model_path = load_llama(args.model, vocab_only=True)
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    vectors = []
    for category, text in corpus():
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        vector = {"category": category, "text": text, "ids": ids}
        decoded = detokenize(vocab, ids).decode("utf-8", errors="replace")
        if decoded != text:
            vector["decoded"] = decoded
        vectors.append(vector)
    golden = {
        "provenance": provenance(model_path, "python tests/goldens/make_tokenizer_vectors.py",
                                 "llama_tokenize(add_special=True, parse_special=True); "
                                 "llama_detokenize(remove_special=False, unparse_special=True)"),
        "vocab_size": llama_cpp.llama_vocab_n_tokens(vocab),
        "bos_id": llama_cpp.llama_vocab_bos(vocab),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "eog_ids": [i for i in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, i)],
        "vectors": vectors,
    }
    write_json(args.out, golden)
    print(f"{len(vectors)} vectors -> {args.out} ({args.out.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
