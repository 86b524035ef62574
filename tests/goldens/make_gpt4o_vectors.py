"""Regenerate tests/goldens/gpt4o_vectors.json: llama.cpp's tokenization with a gpt-oss GGUF's
vocabulary (o200k, pre-tokenizer "gpt-4o"), the gguf-bpe backend's reference for gpt-oss files.

A vocabulary-only GGUF is written to a temporary folder with the tokenizer metadata a gpt-oss
GGUF holds: o200k_base.tiktoken as the `bpe-openai` package ships it, turned into tokens and
merges by `tokenizer_hf.encoding_metadata`, and the special tokens of o200k_vectors.json.
llama.cpp (llama-cpp-python, the `goldens` extra) tokenizes the texts of o200k_vectors.json and
of tokenizer_vectors.json's corpus (make_tokenizer_vectors.corpus, less its random compositions
of fragments, "mixed" and "long", which only make the file larger) with special tokens
recognised. test_tokenizer_hf.py checks the gguf-bpe backend against every vector.

llama.cpp's "gpt-4o" split is its own rewrite of o200k's pattern, so it need not agree with
OpenAI's tokenizer: `upstream_agreement` counts the o200k_vectors.json texts where it does.

    python tests/goldens/make_gpt4o_vectors.py [--out PATH]   # needs the goldens and dev extras
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import gguf
from goldens_common import write_json
from make_o200k_vectors import o200k_data_file
from make_tokenizer_vectors import corpus

from reference_worker.tokenizer_hf import encoding_metadata, read_tiktoken_ranks

HERE = Path(__file__).parent


def vocabulary_only_gguf(path: Path, metadata: dict) -> Path:
    """A GGUF with no tensors: a qwen2 header llama.cpp accepts, and the tokenizer metadata."""
    writer = gguf.GGUFWriter(str(path), "qwen2")
    for key, value in (("context_length", 4096), ("embedding_length", 64), ("block_count", 1),
                       ("feed_forward_length", 128), ("attention.head_count", 1)):
        writer.add_uint32(f"qwen2.{key}", value)
    writer.add_float32("qwen2.attention.layer_norm_rms_eps", 1e-6)
    writer.add_tokenizer_model(metadata[gguf.Keys.Tokenizer.MODEL])
    writer.add_tokenizer_pre(metadata[gguf.Keys.Tokenizer.PRE])
    writer.add_token_list(metadata[gguf.Keys.Tokenizer.LIST])
    writer.add_token_types(metadata[gguf.Keys.Tokenizer.TOKEN_TYPE])
    writer.add_token_merges(metadata[gguf.Keys.Tokenizer.MERGES])
    writer.add_bos_token_id(metadata[gguf.Keys.Tokenizer.BOS_ID])
    writer.add_eos_token_id(metadata[gguf.Keys.Tokenizer.EOS_ID])
    writer.add_add_bos_token(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "gpt4o_vectors.json")
    args = parser.parse_args(argv)
    import llama_cpp

    o200k = json.loads((HERE / "o200k_vectors.json").read_text(encoding="utf-8"))
    specials = o200k["special_tokens"]
    # gpt-oss's GGUF names <|startoftext|> BOS and <|return|> EOS.
    metadata = encoding_metadata(read_tiktoken_ranks(o200k_data_file()), specials, "gpt-4o",
                                 bos_id=specials["<|startoftext|>"], eos_id=specials["<|return|>"])
    with tempfile.TemporaryDirectory() as folder:
        path = vocabulary_only_gguf(Path(folder) / "o200k-vocabulary.gguf", metadata)
        llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        eog_ids = [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)]

        def tokenize(text: str) -> list[int]:
            return llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

        upstream = o200k["vectors"]
        agreeing = sum(tokenize(v["text"]) == v["ids"] for v in upstream)
        texts = [("o200k", v["text"]) for v in upstream]
        texts += [(category, text) for category, text in corpus() if category not in ("mixed", "long")]
        vectors = [{"category": category, "text": text, "ids": tokenize(text)} for category, text in texts]

    golden = {
        "provenance": {
            "tool": "llama-cpp-python", "version": llama_cpp.__version__,
            "vocabulary": f"o200k_base ({o200k['provenance']['data']}) and o200k_vectors.json's special tokens, "
                          "pre-tokenizer gpt-4o",
            "command": "python tests/goldens/make_gpt4o_vectors.py",
            "how": "llama_tokenize(add_special=True, parse_special=True) on a vocabulary-only GGUF",
        },
        "upstream_agreement": f"{agreeing} of the {len(upstream)} o200k_vectors.json texts tokenize as "
                              "openai-harmony does",
        "vocab_size": n_vocab,
        "eog_ids": eog_ids,
        "vectors": vectors,
    }
    write_json(args.out, golden)
    print(f"{len(vectors)} vectors -> {args.out} ({args.out.stat().st_size} bytes); {golden['upstream_agreement']}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
