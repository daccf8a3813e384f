"""Did you mean…? The one rule that suggests a known word for a mistyped one.

Every "did you mean" of the command line comes from here: ``wsbus send``'s note
about a recipient never seen on the channel (:mod:`.unseen`), ``wsbus chat``'s
hints for an unknown ``@name``, ``/command`` or thread, and ``agent_comms``'s
unknown recipients. The rule: the candidate most similar to the word (difflib's
ratio, as :func:`difflib.get_close_matches` computes it, at least :data:`CUTOFF`),
ties going to the first in sorted order, so the answer never depends on set order.

Kept free of any import beyond the standard library: the lightest commands use it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CUTOFF", "closest", "did_you_mean"]

CUTOFF = 0.6
"""How similar (difflib's ratio, 0 to 1) a candidate must be to be suggested."""


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word``, if one is close enough (never ``word`` itself)."""
    names = sorted(set(candidates) - {word})
    if not names:
        return None
    import difflib  # only when there is something to compare: ``send`` starts faster

    best: tuple[float, str] | None = None
    for cand in names:
        score = difflib.SequenceMatcher(None, cand, word).ratio()
        if score >= CUTOFF and (best is None or score > best[0]):
            best = (score, cand)
    return best[1] if best is not None else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``" — did you mean 'X'?"`` for the closest candidate, or ``""`` (a suffix for a
    one-line message)."""
    hit = closest(word, candidates)
    return f" — did you mean {hit!r}?" if hit is not None else ""
