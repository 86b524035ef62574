"""The verdict model: the rule audit's reading weighed against the labelled features.

Rules tuned on the misses of one labelled part did not carry to the next part written blind (five
rounds of it: audit_bench's held-out parts). What does carry is how the rules' signals relate to a
careful reader's verdict: how far the deciding lines and their requirements state the feature,
how well the best line ranks, how close in meaning the nearest lines are and which scope those
lines sit in, how the feature is phrased (a departure from a rule reads "treating X as Y", "only",
"instead of"; a capability reads as a noun). A softmax regression over those signals (below: about
fifty numbers a feature, standardised) is trained on the labelled parts that `model_held_out` in
audit_labels.yaml does not name, and measured on those it does.

The model only weighs verdicts the lines shown can support (supported_verdicts): a verdict that
no cited line's scope states is not a verdict a proof can show.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources

import numpy as np

MODEL = resources.files("requirements_map") / "data" / "verdict_model.json"
VERDICTS = ("in M0", "deferred to M1", "later milestone", "out of scope for M0", "contradictory",
            "not addressed by the spec")
_CONFIDENCES = ("high", "medium", "unsure")
_TIERS = (None, 1, 2, 3, 4, 5, 6)
_CLAIMS = ("in-m0", "optional", "deferred-M1", "later", "out-of-scope", "removed", "prohibited")
NEAREST = 5  # lines nearest in meaning read for a feature
# How a reviewer phrases a feature: a departure from a rule, a named capability, a value, a test.
_PHRASINGS = [re.compile(p, re.IGNORECASE) for p in (
    r"\binstead of\b|\brather than\b|\bin place of\b",
    r"\bonly\b",
    r"\bwithout\b|\bno\b|\bnever\b|\bskipping\b|\bomitting\b|\bignoring\b",
    r"^(?:treating|letting|keeping|accepting|allowing|defaulting|clamping|returning|reporting|sending|emitting"
    r"|exiting|logging|using|calling|reading|fetching|re-)",
    r"\d",
    r"['\"`]",
    r"--[a-z]|/[a-z]",
    r"\b(?:support|supporting)\b",
    r"\b(?:after|before|once|when|while|until)\b",
    r"\b(?:a|an|the)\b",
    r"^[a-z]+ing\b",
    r"\b(?:mode|api|endpoint|backend|dashboard|metrics?|plugin|cluster)\b",
    r"\b(?:M1|M2|M3|milestone|later|deferred|future)\b",
    r"\b(?:test|tests|testing|benchmark)\b")] + [re.compile(r"[A-Z]{2,}")]  # an acronym, as written


def signal_vector(auditor, audit, found) -> np.ndarray:
    """The numbers the model reads for `audit` (made by `auditor`; `found`: its Signals)."""
    claims = {ev.claim for ev in audit.evidence if ev.claim}
    x = [audit.verdict == v for v in VERDICTS] + [audit.confidence == c for c in _CONFIDENCES]
    x += [audit.deciding_tier == t for t in _TIERS] + [c in claims for c in _CLAIMS]
    x += [found.unstated_share, bool(found.unused), found.best_block[1] if found.best_block else 0.0,
          min(found.top_score, 30) / 10, sum(1 for ev in audit.evidence if ev.claim) / 5, bool(audit.contradictions)]
    near = auditor.meanings.nearest(audit.feature, NEAREST)
    cosines = [c for _, c in near] + [0.0] * (NEAREST - len(near))
    x += [cosines[0], cosines[0] - cosines[-1], cosines[0] > 0.6, cosines[0] > 0.5]
    top = [auditor.index.at(n) for n, _ in near[:3]]
    scopes = [auditor._line_scope(e) for e in top]
    x += [scopes.count(s) / 3 for s in (*_CLAIMS, None)] + [sum(bool(e.scope_list) for e in top) / 3]
    x += [bool(p.search(audit.feature)) for p in _PHRASINGS] + [len(audit.feature.split()) / 10]
    return np.array(x, dtype=float)


def supported_verdicts(auditor, audit) -> dict[str, list]:
    """Each verdict the audit's lines can support, with the lines that do: a line's scope ("in M0" for a
    line of an M0 requirement), a departure from an M0 line for "out of scope", the disagreements shown
    for "contradictory"; "not addressed" needs none."""
    support: dict[str, list] = {"not addressed by the spec": []}
    for ev in list(audit.evidence) + list(audit.closest):
        if ev.source != "spec":
            continue
        scope = ev.claim or auditor._line_scope(auditor.index.at(ev.line))
        for verdict in {"in-m0": ("in M0", "out of scope for M0"), "optional": ("in M0",),
                        "deferred-M1": ("deferred to M1",), "later": ("later milestone",),
                        "out-of-scope": ("out of scope for M0",), "removed": ("out of scope for M0",),
                        "prohibited": ("out of scope for M0",)}.get(scope, ()):
            support.setdefault(verdict, []).append(ev)
    if audit.contradictions:
        support["contradictory"] = []
    return support


class VerdictModel:
    """A trained model (the JSON that `train` writes): probabilities over VERDICTS for a signal vector."""

    def __init__(self, stored: dict):
        self.trained_on = stored["trained_on"]
        self.features = stored["features"]
        self.mean, self.scale = np.array(stored["mean"]), np.array(stored["scale"])
        self.weights = np.array(stored["weights"])

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return _softmax(np.append((x - self.mean) / self.scale, 1.0) @ self.weights)


def train(vectors: np.ndarray, verdicts: list[str], parts: list[str], *, penalty: float = 1.0,
          steps: int = 500, rate: float = 0.5) -> dict:
    """Fit the model on labelled signal vectors by full-batch gradient descent (deterministic: the same
    labels give the same weights); returns what VerdictModel reads."""
    mean, scale = vectors.mean(0), vectors.std(0) + 1e-9
    x = np.hstack([(vectors - mean) / scale, np.ones((len(vectors), 1))])
    y = np.eye(len(VERDICTS))[[VERDICTS.index(v) for v in verdicts]]
    w = np.zeros((x.shape[1], len(VERDICTS)))
    for _ in range(steps):
        gradient = x.T @ (_softmax(x @ w) - y) / len(x)
        gradient[:-1] += penalty * w[:-1] / len(x)  # the bias goes unpenalised
        w -= rate * gradient
    return {"trained_on": sorted(set(parts)), "features": len(vectors), "mean": mean.round(8).tolist(),
            "scale": scale.round(8).tolist(), "weights": w.round(8).tolist()}


@cache
def load_verdict_model() -> VerdictModel | None:
    """The committed model, or None where none is stored (the rules' verdicts then stand alone)."""
    return VerdictModel(json.loads(MODEL.read_text(encoding="utf-8"))) if MODEL.is_file() else None


def store(stored: dict) -> None:
    MODEL.write_text(json.dumps(stored) + "\n", encoding="utf-8")
    load_verdict_model.cache_clear()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
