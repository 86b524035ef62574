"""Random request bodies for POST /execute and POST /cancel, from a seed (the same seed gives
the same bodies, so a finding can be replayed).

Most are near misses of a valid request, where validation bugs live: one to three fields
replaced by a value of another type or at an edge of its range, a required field dropped, an
unknown one added; the rest are JSON that is not an object, JSON cut short or with bytes
spliced in, bytes that are not UTF-8, constants JSON does not have (NaN), deep nesting and
numbers too long for a parser. A few are valid requests: the worker must run those.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass

#: A valid, short request (max_tokens small: a body that stays valid must not keep the worker).
BASE_EXECUTE = {"job_id": "fuzz", "prompt": "Hello", "max_tokens": 2, "temperature": 0.7, "seed": 1}
FIELDS = ("job_id", "prompt", "max_tokens", "temperature", "seed", "top_p", "top_k", "repetition_penalty",
          "stop", "min_p")
EDGE_NUMBERS = (0, -1, 1, 2, 2048, 2049, 2**31, 2**53 + 1, 2**63, 2**64 - 1, 2**64, -(2**63), 0.5, -0.0,
                1e-300, 1e308, 2.0000001, 3.5)
EDGE_STRINGS = ("", " ", "\u0000", "\ud800", "é" * 3, "👋" * 5, "a" * 40_000, "\n\r\t", "<|endoftext|>",
                "{\"job_id\":1}", "0")


@dataclass(frozen=True)
class RandomBody:
    index: int
    path: str  # /execute or /cancel
    kind: str
    data: bytes

    def describe(self, limit: int = 160) -> str:
        text = self.data[:limit].decode("utf-8", "backslashreplace")
        more = f"... ({len(self.data)} bytes)" if len(self.data) > limit else ""
        return f"#{self.index} POST {self.path} [{self.kind}] {text}{more}"


def random_value(rng: random.Random, depth: int = 0):
    """A JSON value of any type, small, sometimes at an edge."""
    roll = rng.randrange(9 if depth < 3 else 6)
    if roll == 0:
        return None
    if roll == 1:
        return rng.choice((True, False))
    if roll == 2:
        return rng.choice(EDGE_NUMBERS)
    if roll == 3:
        return rng.uniform(-1e6, 1e6)
    if roll == 4:
        return rng.choice(EDGE_STRINGS)
    if roll == 5:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 12)))
    if roll == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if roll == 7:
        return {rng.choice(FIELDS): random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}
    return rng.randrange(-10, 3000)


def _dumps(value) -> bytes:
    """JSON as UTF-8 text; with \\uXXXX escapes where it holds a lone surrogate, which UTF-8 cannot carry."""
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value).encode("ascii")


def _near_miss(rng: random.Random, base: dict) -> tuple[str, bytes]:
    body = dict(base)
    changes = []
    for _ in range(rng.randrange(1, 4)):
        move = rng.randrange(4)
        name = rng.choice(FIELDS)
        if move == 0 and body:
            dropped = rng.choice(sorted(body))
            body.pop(dropped)
            changes.append(f"without {dropped}")
        elif move == 1:
            body[f"x_{rng.randrange(100)}"] = random_value(rng)
            changes.append("unknown field")
        else:
            body[name] = random_value(rng)
            changes.append(f"{name} replaced")
    return ", ".join(changes), _dumps(body)


def _broken(rng: random.Random, base: dict) -> tuple[str, bytes]:
    valid = _dumps(base)
    roll = rng.randrange(8)
    if roll == 0:
        return "JSON cut short", valid[:rng.randrange(0, len(valid))]
    if roll == 1:
        at = rng.randrange(len(valid))
        return "bytes spliced in", valid[:at] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6))) + valid[at:]
    if roll == 2:
        return "not UTF-8", b'{"job_id": "\xff\xfe", "prompt": "\xc3"}'
    if roll == 3:
        return "JSON constant", rng.choice((b"NaN", b'{"job_id": "a", "prompt": "b", "temperature": NaN}',
                                            b'{"job_id": "a", "prompt": "b", "max_tokens": Infinity}'))
    if roll == 4:
        depth = rng.choice((50, 1000, 5000))
        return f"nested {depth} deep", b'{"job_id": "a", "prompt": ' + b"[" * depth + b"]" * depth + b"}"
    if roll == 5:
        digits = rng.choice((30, 5000))
        return f"a number of {digits} digits", b'{"job_id": "a", "prompt": "b", "seed": ' + b"9" * digits + b"}"
    if roll == 6:
        return "duplicate keys", b'{"job_id": "a", "job_id": 5, "prompt": "b", "prompt": null}'
    return "empty body", b""


def random_bodies(seed: int, count: int, job_prefix: str = "fuzz"):
    """`count` RandomBody values, a quarter of them for /cancel; the same seed, the same bodies.
    Job ids of near misses start with `job_prefix` and are unique, so valid ones can be cancelled."""
    rng = random.Random(seed)
    for index in range(count):
        path = "/cancel" if rng.random() < 0.25 else "/execute"
        base = ({"job_id": f"{job_prefix}-{seed}-{index}"} if path == "/cancel"
                else {**BASE_EXECUTE, "job_id": f"{job_prefix}-{seed}-{index}"})
        roll = rng.random()
        if roll < 0.65:
            kind, data = _near_miss(rng, base)
        elif roll < 0.75:
            kind, data = "JSON, not an object", _dumps(random_value(rng))
        elif roll < 0.97:
            kind, data = _broken(rng, base)
        else:
            kind, data = "valid", _dumps(base)
        yield RandomBody(index, path, kind, data)
