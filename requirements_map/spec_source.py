"""Where the spec text comes from: --spec FILE, $M0_SPEC, or a hash-checked cached copy.

The spec is not ours to ship. Without a path we use a cached copy of the pinned revision of
record under ~/.cache/m0-conformance/spec/, fetching it from the llama-orch repository when the
network allows and checking its sha256. A file with another hash is still used, with a warning
that names the revision it appears to be.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .spec_parser import ParsedSpec, SpecFormatError, parse_spec

PINNED_SHA256 = "b04551a2423198788e478fae191b2e1b1e3ca130d6ddb4a48ff0973c0a3a7c40"
PINNED_URL = "https://raw.githubusercontent.com/veighnsche/llama-orch/d4a857ac/bin/.specs/01_M0_worker_orcd.md"
KNOWN_REVISIONS = {
    PINNED_SHA256: "d4a857ac (2025-10-03, the revision of record)",
    "4a07f90ee374fc5a7ef02862dd03226e5ccf8d8265737ab906396b237367e42e": "84202fea (2025-10-04, adds advanced sampling)",
    "6a843bebd03d7036cdee95874bf971d719cddabff023634eec7b3ef85280b43c": "1adb7159 (2025-10-05, consolidated)",
}
ENV_VAR = "M0_SPEC"


class SpecSourceError(Exception):
    """No usable spec file: missing, unreadable, not a spec, or not fetchable."""


@dataclass(frozen=True)
class SpecFile:
    path: Path
    sha256: str
    revision: str  # a known revision's description, or "unknown revision"
    parsed: ParsedSpec

    @property
    def is_pinned(self) -> bool:
        return self.sha256 == PINNED_SHA256


def cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "m0-conformance" / "spec" / "01_M0_worker_orcd.d4a857ac.md"


def load_spec(path: str | os.PathLike | None = None, *, warn=None) -> SpecFile:
    """Load and parse the spec named by `path`, else $M0_SPEC, else the cached pinned copy.

    Raises SpecSourceError with a message meant for the user. Calls `warn` (default: print to
    stderr) when the file is not the pinned revision.
    """
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    chosen = path or os.environ.get(ENV_VAR)
    file = Path(chosen) if chosen else _cached_pinned_copy()
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise SpecSourceError(f"cannot read spec file {file}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
        parsed = parse_spec(text)
    except (UnicodeDecodeError, SpecFormatError) as exc:
        raise SpecSourceError(f"{file} is not an M0 worker spec: {exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    revision = KNOWN_REVISIONS.get(digest, "unknown revision")
    if digest != PINNED_SHA256:
        warn(f"{file} is not the pinned revision of record d4a857ac (sha256 {digest[:12]}...); "
             f"it appears to be {revision}. Line numbers and scopes refer to this file.")
    return SpecFile(file, digest, revision, parsed)


def _cached_pinned_copy() -> Path:
    target = cache_path()
    if target.exists() and _sha256(target) == PINNED_SHA256:
        return target
    try:
        with urllib.request.urlopen(PINNED_URL, timeout=20) as response:
            raw = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise SpecSourceError(
            f"no spec given and the pinned revision could not be fetched from {PINNED_URL} ({exc}). "
            f"Pass --spec FILE or set {ENV_VAR} to a copy of llama-orch bin/.specs/01_M0_worker_orcd.md "
            f"(commit d4a857ac).") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != PINNED_SHA256:
        raise SpecSourceError(f"the file fetched from {PINNED_URL} has sha256 {digest}, "
                              f"not the pinned {PINNED_SHA256}; pass --spec FILE or set {ENV_VAR}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(raw)
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
