"""Model names as people type them: case-insensitive lookup and ranked suggestions.

Pure functions over the names the registry hands in (no table here), so the rules can be read
and tested on their own. Suggestions are always canonical model names, never aliases: an alias
that looks like what was typed points at the model it names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

__all__ = ["fold", "suggest"]

_MAX_SUGGESTIONS, _MAX_SIMILAR = 5, 3
_SIMILAR = 2  # the rank of names that are only similar
_CUTOFF = 0.6  # difflib ratio below which a name is not "close" (difflib's own default)


def fold(name: str) -> str:
    """The form names are compared in: case-insensitive, surrounding blanks ignored."""
    return name.strip().casefold()


def suggest(typed: str, names: Iterable[str], aliases: Mapping[str, str]) -> list[str]:
    """Up to five canonical ``names`` close to ``typed``, best first.

    Ranked by how a name (or one of its ``aliases``, alias -> name) matches, compared
    case-insensitively: first names that start with what was typed, then names that contain
    it; only when none does, the three most similar names (difflib). Within a rank a match on
    the name itself comes before a match through an alias, then the more similar, then
    alphabetical order.
    """
    query = fold(typed)
    spellings: dict[str, list[tuple[str, bool]]] = {n: [(n, True)] for n in names}
    for alias, name in aliases.items():
        spellings.setdefault(name, []).append((alias, False))
    ranked = sorted(
        (min(_rank(query, fold(form), canonical) for form, canonical in forms), name)
        for name, forms in spellings.items()
    )
    found = [name for rank, name in ranked if rank[0] < _SIMILAR]
    if found:  # names that hold what was typed: the merely similar ones would be noise
        return found[:_MAX_SUGGESTIONS]
    return [name for rank, name in ranked if rank[0] == _SIMILAR][:_MAX_SIMILAR]


def _rank(query: str, form: str, canonical: bool) -> tuple[int, int, float]:
    """(tier, alias?, -similarity): tier 0 prefix, 1 substring, 2 similar, 3 unrelated."""
    similarity = difflib.SequenceMatcher(None, query, form).ratio()
    if query and form.startswith(query):
        tier = 0
    elif query and query in form:
        tier = 1
    elif similarity >= _CUTOFF:
        tier = _SIMILAR
    else:
        tier = _SIMILAR + 1
    return tier, 0 if canonical else 1, -similarity
