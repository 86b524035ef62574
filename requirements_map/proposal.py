"""Read a feature proposal: each feature's name and the proposer's claim of what it is for.

Two forms. YAML (`.yaml`/`.yml`): a list of `{name, purpose}` mappings, at the top level or under
`features:`. Markdown: one `##` (or `###`) heading per feature whose first paragraph is the claim,
or list items `- **name** — claim` / `- name: claim`; a `#` title line and text before the first
feature are the proposal's own preamble.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml


class ProposalError(ValueError):
    """The proposal file cannot be read as a list of named features."""


@dataclass(frozen=True)
class ProposedFeature:
    name: str
    purpose: str | None  # the proposer's claim, verbatim
    where: str  # "line 12" or "entry 3", for messages and the proof


_ITEM = re.compile(r"^\s*[-*]\s+(?P<text>.*)$")
_BOLD = re.compile(r"^\*\*(?P<name>[^*]*)\*\*\s*(?:[:—–-]\s*)?(?P<rest>.*)$")
_SEPARATOR = re.compile(r"\s[—–-]\s|:\s")
_HEADING = re.compile(r"^(#{2,3})\s+(.*?)\s*$")


def read_proposal(path: str | Path) -> list[ProposedFeature]:
    """The features of the proposal at `path`; raise ProposalError with a message for the user."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ProposalError(f"cannot read proposal {file}: {reason}") from exc
    if not text.strip():
        raise ProposalError(f"proposal {file} is empty; list features as '## name' headings with their purpose, "
                            "or as YAML '- {name: ..., purpose: ...}'")
    features = _from_yaml(text, file) if file.suffix.lower() in (".yaml", ".yml") else _from_markdown(text)
    if not features:
        raise ProposalError(f"proposal {file} names no features ('## name' headings or '- name: purpose' items)")
    return features


def _from_yaml(text: str, file: Path) -> list[ProposedFeature]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProposalError(f"proposal {file} is not valid YAML: {exc}") from exc
    items = data.get("features") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ProposalError(f"proposal {file}: expected a list of features (or 'features:' with a list)")
    out = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not str(item.get("name") or "").strip():
            raise ProposalError(f"proposal {file}: entry {number} has no name")
        purpose = item.get("purpose") or item.get("why")
        out.append(ProposedFeature(str(item["name"]).strip(), str(purpose).strip() if purpose else None,
                                   f"entry {number}"))
    return out


def _from_markdown(text: str) -> list[ProposedFeature]:
    lines = text.splitlines()
    if any(_HEADING.match(line) for line in lines):
        return _by_heading(lines)
    out = []
    for n, line in enumerate(lines, start=1):
        item = _ITEM.match(line)
        if not item:
            continue
        text = item.group("text").strip()
        bold = _BOLD.match(text)
        if bold:
            name, rest = bold.group("name"), bold.group("rest")
        else:
            cut = _SEPARATOR.search(text)
            name, rest = (text[:cut.start()], text[cut.end():]) if cut else (text, "")
        if not name.strip():
            raise ProposalError(f"line {n}: a feature without a name")
        out.append(ProposedFeature(name.strip(), rest.strip() or None, f"line {n}"))
    return out


def _by_heading(lines: list[str]) -> list[ProposedFeature]:
    out, current, body = [], None, []

    def close():
        if current is not None:
            paragraph = " ".join(_first_paragraph(body)).strip()
            out.append(ProposedFeature(current[0], paragraph or None, f"line {current[1]}"))

    for n, line in enumerate(lines, start=1):
        heading = _HEADING.match(line)
        if heading:
            close()
            if not heading.group(2).strip():
                raise ProposalError(f"line {n}: a feature heading without a name")
            current, body = (heading.group(2).strip(), n), []
        elif current is not None:
            body.append(line)
    close()
    return out


def _first_paragraph(body: list[str]) -> list[str]:
    paragraph = []
    for line in body:
        if not line.strip():
            if paragraph:
                break
            continue
        paragraph.append(re.sub(r"^\s*(?:\*\*)?(?:purpose|why|rationale)(?:\*\*)?\s*:\s*(?:\*\*)?", "", line.strip(),
                                flags=re.IGNORECASE))
    return paragraph
