"""Where the spec disagrees with itself (data/contradictions.yaml), as a careful reader recorded it.

An entry names its subject the ways a reviewer does ("M0 schedule", "GGUF header parsing") and has two
or more sides, each with what it states, the words that are its own ("6-7 weeks", "std::ifstream") and
the lines that state it. The entries were written by reading the whole spec, without the audit's
labelled features: numbers that differ for one thing, one step given two mechanisms, one job given to
two components, a scope stated two ways.

A feature takes a side when it names that side's own words. One that names the subject and takes a
side asks for what one place of the spec states and another denies: the verdict is "contradictory",
every side cited, unless every side stands outside M0 alike (two deferred values of one deadline
leave the feature deferred). A feature that names the subject without taking a side gets the
disagreement as a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from .spec_index import near, terms


class ConflictsError(ValueError):
    """The contradictions file is not a list of well-formed entries."""


@dataclass(frozen=True)
class Side:
    says: str
    names: tuple[tuple[str, ...], ...]  # as search terms
    lines: tuple[int, ...]


@dataclass(frozen=True)
class Disagreement:
    id: str
    subject: str
    names: tuple[tuple[str, ...], ...]
    sides: tuple[Side, ...]

    @property
    def lines(self) -> set[int]:
        return {n for side in self.sides for n in side.lines}

    def named(self, words: tuple[str, ...]) -> bool:
        """Whether a feature of these terms names the subject."""
        return _names_any(self.names, words)

    def taken(self, words: tuple[str, ...]) -> Side | None:
        """The one side whose own words the feature names (None for none, or for more than one)."""
        sides = [side for side in self.sides if _names_any(side.names, words)]
        return sides[0] if len(sides) == 1 else None


def _names_any(names: tuple[tuple[str, ...], ...], words: tuple[str, ...]) -> bool:
    return any(name and near(name, words) for name in names)


@cache
def load_disagreements() -> tuple[Disagreement, ...]:
    """The packaged entries; raise ConflictsError if one is malformed or has fewer than two sides."""
    path = resources.files("requirements_map") / "data" / "contradictions.yaml"
    try:
        found = tuple(Disagreement(e["id"], e["subject"], tuple(terms(n) for n in e.get("names", ())),
                                   tuple(Side(s["says"], tuple(terms(n) for n in s.get("names") or ()),
                                              tuple(int(n) for n in s["lines"])) for s in e["sides"]))
                      for e in yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ConflictsError(f"cannot read {path}: {exc}") from exc
    for d in found:
        if len(d.sides) < 2 or not all(s.lines for s in d.sides):
            raise ConflictsError(f"{path}: {d.id} needs two sides or more, each with its lines")
    return found
