"""Outdated coverage: scenarios whose wording was checked against an older text of their requirement.

Every feature file records the spec revision its scenarios were checked against with a tag,
`@checked-d4a857ac`; a scenario re-checked later adds its own (`@checked-1adb7159`), and the
latest revision among its tags counts. When the spec under test is another revision in which a
requirement's heading or body reads differently, the coverage of that requirement is outdated:
its scenarios hold the worker to what an older text asked. (Scenarios checked against a later
revision than the one under test are that revision's, and informational: not outdated.) Which
revision is which comes from
the spec files' sha256 (spec_source.KNOWN_REVISIONS); the old text from a copy of that revision
next to the spec under test or in the cache.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from .drift import wording_diff
from .spec_parser import REQUIREMENT_ID, ParsedSpec
from .spec_source import KNOWN_REVISIONS, SpecFile, cache_path, load_spec

CHECKED_TAG = re.compile(r"checked-([0-9a-f]{7,40})")
#: Known revisions by short id: (sha256, date).
REVISIONS = {desc.split()[0]: (sha, re.search(r"\d{4}-\d{2}-\d{2}", desc).group()) for sha, desc in
             KNOWN_REVISIONS.items()}


@dataclass(frozen=True)
class Outdated:
    checked: str  # the revision the scenarios' wording was checked against
    spec: str  # the revision under test
    diff: list[str] = field(default_factory=list)  # unified diff of the requirement, checked -> spec


def checked_revision(tags, default: str) -> str:
    """The revision a scenario was checked against: the latest of its @checked- tags (known
    revisions by date), else `default`."""
    revisions = [m.group(1) for m in map(CHECKED_TAG.fullmatch, tags) if m]
    if not revisions:
        return default
    return max(revisions, key=lambda r: (REVISIONS.get(r, ("", ""))[1], r))


def revision_name(spec: SpecFile) -> str:
    """The short id of a known revision (`84202fea`), else the file's name and hash."""
    known = KNOWN_REVISIONS.get(spec.sha256)
    return known.split()[0] if known else f"{spec.path.name} (sha256 {spec.sha256[:12]})"


def _older(revision: str, than: str) -> bool:
    """Whether `revision` is older than `than` (a file of unknown revision is newer than any)."""
    if revision == than:
        return False
    if than not in REVISIONS:
        return True
    return REVISIONS.get(revision, ("", ""))[1] < REVISIONS[than][1]


def find_revision(revision: str, near: Path) -> Path | None:
    """A copy of a known revision: a Markdown file next to `near` or the cached pinned copy whose
    sha256 is that revision's; None when there is none."""
    wanted = REVISIONS.get(revision, (None,))[0]
    for path in [*sorted(Path(near).parent.glob("*.md")), cache_path()]:
        if wanted and path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == wanted:
            return path
    return None


def outdated_requirements(results, spec: SpecFile, default_revision: str) -> tuple[dict[str, Outdated], list[str]]:
    """Per requirement id whose scenarios in `results` were checked against a revision in which
    its wording differs from `spec`'s: what changed. Also notes on revisions that could not be
    compared (no copy found)."""
    under_test = revision_name(spec)
    checked: dict[str, set[str]] = {}
    for result in results:
        revision = checked_revision(result.tags, default_revision)
        for rid in (t for t in result.tags if REQUIREMENT_ID.fullmatch(t)):
            checked.setdefault(rid, set()).add(revision)
    parsed: dict[str, ParsedSpec | None] = {}
    notes, outdated = [], {}
    for rid, revisions in sorted(checked.items()):
        for revision in sorted(revisions):
            if not _older(revision, under_test):
                continue
            if revision not in parsed:
                path = find_revision(revision, spec.path)
                parsed[revision] = load_spec(path, warn=lambda m: None).parsed if path else None
                if path is None:
                    notes.append(f"scenarios checked against revision {revision} could not be compared with the "
                                 f"spec under test: no copy of {revision} next to {spec.path} or in the cache")
            if parsed[revision] is not None:
                diff = wording_diff(parsed[revision], spec.parsed, rid, revision, under_test)
                if diff:
                    outdated[rid] = Outdated(revision, under_test, diff)
    return outdated, notes
