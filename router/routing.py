"""The routing table: its agents and rules, compiled once, and the classification of signals.

router/routing_file.py reads and validates the TOML file into these."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from router.model import Balance, Mode

__all__ = ["AgentConfig", "RoutingTable", "Rule"]


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One downstream agent and how to call it."""

    name: str
    # One or more replicas; each attempt goes to one of them (router/balance.py).
    urls: tuple[str, ...]
    timeout_ms: int
    max_attempts: int
    backoff_initial_ms: int
    backoff_max_ms: int
    concurrency: int
    breaker_failures: int = 5
    breaker_open_ms: int = 5000
    retry_budget: float = 0.2
    auto_replay: bool = True
    signing_secrets_env: str = ""
    balance: Balance = "least_latency"
    # Read from that variable at load; never printed (repr), logged or stored.
    signing_keys: tuple[bytes, ...] = field(default=(), repr=False, compare=False)


_WORD_RE = re.compile(r"\w+")


class _Text(NamedTuple):
    """A payload's strings, prepared once per classification for every rule's keywords."""

    strings: Sequence[str]
    folded: str  # the strings casefolded and joined with NUL
    words: frozenset[str]  # every maximal run of word characters in `folded`


_NO_WORDS: frozenset[str] = frozenset()


def _prepare(strings: Sequence[str], with_keywords: bool) -> _Text:
    if not with_keywords:
        return _Text(strings, "", _NO_WORDS)
    # Strings never contain NUL (the caller guarantees it), and NUL is a non-word
    # character, so joining them cannot create a whole-word match across two values.
    folded = "\x00".join(strings).casefold()
    return _Text(strings, folded, frozenset(_WORD_RE.findall(folded)))


def _compile_keywords(
    keywords: Sequence[str],
) -> tuple[frozenset[str], tuple[tuple[str, ...], ...], re.Pattern[str] | None]:
    """Split keywords into single words (set lookups) and the rest (one regex)."""
    words: set[str] = set()
    phrases: list[list[str]] = []
    for keyword in keywords:
        parts = keyword.casefold().split()
        if len(parts) == 1 and _WORD_RE.fullmatch(parts[0]):
            words.add(parts[0])
        elif parts:
            phrases.append(parts)
    if not phrases:
        return frozenset(words), (), None
    # Lookarounds rather than \b so a keyword that starts or ends with punctuation ("c++",
    # "#urgent") still needs a non-word neighbour; any whitespace run joins a phrase's words
    # because payload text wraps and double-spaces. The text is casefolded, so no IGNORECASE.
    alternatives = "|".join(r"\s+".join(map(re.escape, parts)) for parts in phrases)
    regex = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
    return frozenset(words), tuple(tuple(parts) for parts in phrases), regex


@dataclass(frozen=True, slots=True)
class Rule:
    """A classification rule: which signals it matches and where they go."""

    kind: str
    agents: tuple[AgentConfig, ...]
    mode: Mode
    deadline_ms: int
    default: bool
    keywords: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    _words: frozenset[str] = field(init=False, repr=False, compare=False)
    _phrases: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)
    _phrase_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _pattern_res: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    # Built once: the claim of every signal records them.
    agent_names: list[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "agent_names", [a.name for a in self.agents])
        words, phrases, phrase_re = _compile_keywords(self.keywords)
        object.__setattr__(self, "_words", words)
        object.__setattr__(self, "_phrases", phrases)
        object.__setattr__(self, "_phrase_re", phrase_re)
        object.__setattr__(self, "_pattern_res", tuple(re.compile(p) for p in self.patterns))

    def _matches(self, text: _Text) -> bool:
        if self._words and not self._words.isdisjoint(text.words):
            return True
        # Python's re takes milliseconds over a 64 KiB text where a substring check takes
        # microseconds, so the regex only runs when some phrase has all its words present.
        phrase_re = self._phrase_re
        if (
            phrase_re is not None
            and any(all(part in text.folded for part in parts) for parts in self._phrases)
            and phrase_re.search(text.folded) is not None
        ):
            return True
        # User patterns run per string so ^, $ and . mean what they would on one value.
        for pattern in self._pattern_res:
            for s in text.strings:
                if pattern.search(s) is not None:
                    return True
        return False


@dataclass(frozen=True)
class RoutingTable:
    """A loaded, validated routing table."""

    source: str
    agents: Mapping[str, AgentConfig]
    rules: tuple[Rule, ...]
    _matching: tuple[Rule, ...] = field(init=False, repr=False, compare=False)
    _default: Rule = field(init=False, repr=False, compare=False)
    _has_keywords: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.rules or not self.rules[-1].default:
            raise ValueError("the last rule of a routing table must be the default rule")
        matching = self.rules[:-1]
        object.__setattr__(self, "_matching", matching)
        object.__setattr__(self, "_default", self.rules[-1])
        object.__setattr__(self, "_has_keywords", any(r.keywords for r in matching))

    def classify(self, strings: Sequence[str]) -> Rule:
        """The first rule matching any of the payload's string values, else the default rule."""
        text = _prepare(strings, self._has_keywords)
        for rule in self._matching:
            if rule._matches(text):
                return rule
        return self._default

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every rule's kind, in order, deduplicated."""
        return tuple(dict.fromkeys(rule.kind for rule in self.rules))
