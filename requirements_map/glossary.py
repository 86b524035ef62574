"""The field's vocabulary as data (data/glossary.yaml): names, synonyms and the relations a reviewer uses.

An entry has a term, its other names (`aka`: synonyms, abbreviations, the spec's own wordings),
the requirements that are the concept (`req`), the broader concepts it is an instance of
(`is_a`), the concepts it is a means to (`for`), and the requirements it goes against
(`conflicts`, each with the reason). Apart from the entries, pairs of `opposites`: words whose one
side a feature may ask for where an M0 line states the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import yaml

from .spec_index import near, terms


class GlossaryError(ValueError):
    """The glossary file is not a list of well-formed entries."""


@dataclass(frozen=True)
class Entry:
    term: str
    aka: tuple[str, ...] = ()
    req: tuple[str, ...] = ()
    is_a: tuple[str, ...] = ()
    means_to: tuple[str, ...] = ()
    conflicts: tuple[tuple[str, str], ...] = ()  # (requirement id, why)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.term, *self.aka)


@dataclass(frozen=True)
class Match:
    entry: Entry
    name: str  # the name of the entry found in the text
    covered: frozenset[str]  # the text's key terms that the name accounts for


@dataclass
class Glossary:
    entries: list[Entry]
    # (word, its opposite) as search terms, both ways round: a feature asking for one goes against an
    # M0 line stating the other ("a relative --model path" against "absolute path to .gguf file")
    opposites: list[tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)
    by_term: dict[str, Entry] = field(init=False)

    def __post_init__(self):
        self.by_term = {e.term: e for e in self.entries}

    def match(self, text: str, specific=lambda name_terms: True) -> list[Match]:
        """Entries named in `text`: an entry matches when the key terms of one of its names occur in
        the text close together, in any order (other words between them allowed), and `specific` accepts them.
        An entry whose matched terms are all covered by another matched entry is dropped ("paged
        KV-cache block allocator" is the allocator, not the KV cache). Names keep their generic
        words: "CUDA feature" is not "CUDA"."""
        words = terms(text)
        found: dict[str, tuple[Entry, str, frozenset[str]]] = {}
        for entry in self.entries:
            for name in entry.names:
                wanted = terms(name)
                if wanted and near(wanted, words) and specific(wanted):
                    _, best, covered = found.get(entry.term, (entry, name, frozenset()))
                    longer = len(wanted) > len(terms(best)) or not covered
                    found[entry.term] = (entry, name if longer else best, covered | frozenset(wanted))
        kept = [f for f in found.values() if not any(f[2] < other[2] for other in found.values())]
        return [Match(entry, name, covered) for entry, name, covered in sorted(kept, key=lambda f: -len(f[2]))]

    def kin(self, entry: Entry) -> set[str]:
        """The terms of the entry, of what it relates to and of its own kinds (entries that are an
        instance of it): a line naming one of them is about the same thing, not a false friend."""
        return ({entry.term} | {t.term for _, t in self.related(entry)}
                | {e.term for e in self.entries if entry.term in e.is_a})

    def related(self, entry: Entry) -> list[tuple[str, Entry]]:
        """(relation, entry) for the entry's is_a and means_to targets."""
        return [(relation, self.by_term[t]) for relation, targets in (("is_a", entry.is_a), ("for", entry.means_to))
                for t in targets]


@cache
def load_glossary() -> Glossary:
    """The packaged glossary; raise GlossaryError if an entry is malformed or a relation dangles."""
    path = resources.files("requirements_map") / "data" / "glossary.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        entries = [Entry(e["term"], tuple(e.get("aka", ())), tuple(e.get("req", ())), tuple(e.get("is_a", ())),
                         tuple(e.get("for", ())), tuple((rid, why) for rid, why in e.get("conflicts", {}).items()))
                   for e in data["entries"]]
        opposites = [(terms(a), terms(b)) for one, other in data.get("opposites", []) for a, b in ((one, other), (other, one))]
    except (yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise GlossaryError(f"cannot read {path}: {exc}") from exc
    glossary = Glossary(entries, opposites)
    for entry in entries:
        for target in entry.is_a + entry.means_to:
            if target not in glossary.by_term:
                raise GlossaryError(f"glossary entry {entry.term!r} relates to unknown {target!r}")
    return glossary
