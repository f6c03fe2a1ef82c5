"""The routing table: load and validate the TOML file, compile its rules, classify signals."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from router.model import BALANCES, MODES, Balance, Mode
from router.signing import ENV_NAME, SigningError, keys_from_env

__all__ = [
    "AgentConfig",
    "RoutingTable",
    "RoutingTableError",
    "Rule",
    "check_routes_main",
    "load_routing_table",
    "parse_routing_table",
]


PACKAGED_SOURCE = "<packaged router/routes.toml>"

# Agent names and kinds become Prometheus label values and log fields.
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")

_DAY_MS = 86_400_000
# Upper bounds catch typos (a timeout of 10**12 ms) rather than enforce policy.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "timeout_ms": (1, _DAY_MS),
    "deadline_ms": (1, _DAY_MS),
    "max_attempts": (1, 100),
    "backoff_initial_ms": (0, _DAY_MS),
    "backoff_max_ms": (0, _DAY_MS),
    "concurrency": (1, 100_000),
    "breaker_failures": (0, 10_000),
    "breaker_open_ms": (1, _DAY_MS),
}
_AGENT_TUNABLES = (
    "timeout_ms",
    "max_attempts",
    "backoff_initial_ms",
    "backoff_max_ms",
    "concurrency",
    "breaker_failures",
    "breaker_open_ms",
    "retry_budget",
    "auto_replay",
    "signing_secrets_env",
    "balance",
)
_SIGNAL_TUNABLES = ("deadline_ms", "mode")
Tunable = int | float | str | bool
_DEFAULT_VALUES: dict[str, Tunable] = {
    "timeout_ms": 2000,
    "deadline_ms": 10000,
    "max_attempts": 3,
    "backoff_initial_ms": 50,
    "backoff_max_ms": 2000,
    "concurrency": 64,
    "breaker_failures": 5,
    "breaker_open_ms": 5000,
    "retry_budget": 0.2,
    "auto_replay": True,
    "signing_secrets_env": "",
    "balance": "least_latency",
    "mode": "all",
}
# Replicas are a few URLs, each a label value of agent_attempt_seconds: a bound, not a policy.
MAX_REPLICAS = 64
_TOP_KEYS = ("defaults", "agents", "rules")
_DEFAULTS_KEYS = tuple(_DEFAULT_VALUES)
_AGENT_KEYS = ("url", "urls", *_AGENT_TUNABLES)
_RULE_KEYS = ("kind", "agents", "keywords", "patterns", "default", *_SIGNAL_TUNABLES)

_TOML_POSITION_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_END_OF_DOCUMENT = " (at end of document)"


class RoutingTableError(Exception):
    """The routing table could not be loaded."""


class _UnreadableFileError(RoutingTableError):
    """The routing table file could not be read."""


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


def _q(name: str) -> str:
    """A name double-quoted, with escapes so that a newline cannot split the message."""
    return json.dumps(name, ensure_ascii=False)


def _fail(source: str, where: str, problem: str) -> RoutingTableError:
    return RoutingTableError(f"{source}: {where}: {problem}")


def _rule_where(index: int, kind: object) -> str:
    if isinstance(kind, str) and kind:
        return f"rule {index} (kind {_q(kind)})"
    return f"rule {index}"


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], source: str, where: str) -> None:
    for key in table:
        if key not in allowed:
            raise _fail(source, where, f"unknown key {_q(key)} (allowed: {', '.join(allowed)})")


def _int(value: object, key: str, source: str, where: str) -> int:
    low, high = _INT_RANGES[key]
    if type(value) is not int:  # bool is an int subclass; TOML floats are not wanted either
        raise _fail(source, where, f"{key} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise _fail(source, where, f"{key} must be between {low} and {high}, got {value}")
    return value


def _tunable(value: object, key: str, source: str, where: str) -> Tunable:
    if key == "mode":
        return _mode(value, source, where)
    if key == "retry_budget":
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            raise _fail(source, where, f"retry_budget must be within [0, 1], got {value!r}")
        return float(value)
    if key == "signing_secrets_env":
        if not isinstance(value, str) or (value and ENV_NAME.fullmatch(value) is None):
            raise _fail(
                source,
                where,
                f"signing_secrets_env must be an environment variable's name, got {value!r}",
            )
        return value
    if key == "balance":
        if value not in BALANCES:
            raise _fail(
                source, where, f'balance must be "least_latency" or "round_robin", got {value!r}'
            )
        return value
    if key == "auto_replay":
        if type(value) is not bool:
            raise _fail(source, where, f"auto_replay must be true or false, got {value!r}")
        return value
    return _int(value, key, source, where)


def _mode(value: object, source: str, where: str) -> Mode:
    if value not in MODES:
        raise _fail(source, where, f'mode must be "all" or "first_success", got {value!r}')
    return value


def _name(value: object, what: str, source: str, where: str) -> str:
    if not isinstance(value, str) or _NAME_RE.fullmatch(value) is None:
        raise _fail(
            source,
            where,
            f"{what} must be a non-empty string of [A-Za-z0-9_.-], got {value!r}",
        )
    return value


def _url(value: object, source: str, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(source, where, f"url must be a string, got {value!r}")
    problem = None
    if any(c.isspace() or not c.isprintable() for c in value):
        problem = "contains whitespace or control characters"
    else:
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError for a port that is not a number in range
        except ValueError as err:
            problem = str(err)
        else:
            if parts.scheme not in ("http", "https"):
                problem = "must start with http:// or https://"
            elif not parts.hostname:
                problem = "has no host"
    if problem is not None:
        raise _fail(source, where, f"url {value!r} {problem}")
    return value


def _string_list(value: object, key: str, source: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _fail(source, where, f"{key} must be a list of strings, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _fail(source, where, f"{key} must hold non-empty strings, got {item!r}")
        if "\x00" in item:
            raise _fail(source, where, f"{key} must not contain NUL characters: {item!r}")
    return tuple(value)


def _parse_defaults(raw: object, source: str) -> dict[str, Tunable]:
    where = "[defaults]"
    if not isinstance(raw, dict):
        raise _fail(source, where, "must be a table")
    _check_keys(raw, _DEFAULTS_KEYS, source, where)
    values = dict(_DEFAULT_VALUES)
    for key, value in raw.items():
        values[key] = _tunable(value, key, source, where)
    return values


def _parse_agent(
    name: str, raw: object, defaults: Mapping[str, Tunable], source: str
) -> AgentConfig:
    where = f"agent {_q(name)}"
    _name(name, "an agent name", source, where)
    if not isinstance(raw, dict):
        raise _fail(source, where, f"must be a table ([agents.{name}]) with a url")
    _check_keys(raw, _AGENT_KEYS, source, where)
    urls = _urls(raw, source, where)
    tunables: dict[str, Any] = {
        key: _tunable(raw.get(key, defaults[key]), key, source, where) for key in _AGENT_TUNABLES
    }
    if tunables["backoff_max_ms"] < tunables["backoff_initial_ms"]:
        origin = {k: "" if k in raw else " (from [defaults])" for k in _AGENT_TUNABLES}
        raise _fail(
            source,
            where,
            f"backoff_max_ms ({tunables['backoff_max_ms']}{origin['backoff_max_ms']}) must be"
            f" >= backoff_initial_ms ({tunables['backoff_initial_ms']}"
            f"{origin['backoff_initial_ms']})",
        )
    keys: tuple[bytes, ...] = ()
    if tunables["signing_secrets_env"]:
        try:
            keys = keys_from_env(tunables["signing_secrets_env"])
        except SigningError as err:
            raise _fail(source, where, str(err)) from None
    return AgentConfig(name=name, urls=urls, signing_keys=keys, **tunables)


def _urls(raw: Mapping[str, Any], source: str, where: str) -> tuple[str, ...]:
    """The agent's replicas: `url` (one) or `urls` (a list), not both."""
    if "url" in raw and "urls" in raw:
        raise _fail(source, where, "set url or urls, not both")
    if "url" in raw:
        return (_url(raw["url"], source, where),)
    if "urls" not in raw:
        raise _fail(source, where, "url is required (or urls, a list of replicas)")
    value = raw["urls"]
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_REPLICAS:
        raise _fail(
            source, where, f"urls must be a list of 1 to {MAX_REPLICAS} URLs, got {value!r}"
        )
    urls = tuple(_url(url, source, where) for url in value)
    repeated = sorted({url for url in urls if urls.count(url) > 1})
    if repeated:
        raise _fail(source, where, f"urls lists {repeated[0]!r} more than once")
    return urls


def _parse_rule(
    index: int,
    raw: object,
    is_last: bool,
    agents: Mapping[str, AgentConfig],
    defaults: Mapping[str, Tunable],
    source: str,
) -> Rule:
    if not isinstance(raw, dict):
        raise _fail(source, f"rule {index}", "must be a table ([[rules]])")
    where = _rule_where(index, raw.get("kind"))
    _check_keys(raw, _RULE_KEYS, source, where)
    if "kind" not in raw:
        raise _fail(source, where, "kind is required")
    kind = _name(raw["kind"], "kind", source, where)

    default = raw.get("default", False)
    if not isinstance(default, bool):
        raise _fail(source, where, f"default must be true or false, got {default!r}")
    if default and not is_last:
        raise _fail(source, where, "the default rule must be the last rule")
    if is_last and not default:
        raise _fail(source, where, "the last rule must be the default rule (default = true)")

    names = _string_list(raw.get("agents", []), "agents", source, where)
    if not names:
        raise _fail(source, where, "agents must list at least one agent")
    resolved: dict[str, AgentConfig] = {}
    for agent_name in names:
        if agent_name not in agents:
            known = ", ".join(agents) or "none"
            raise _fail(source, where, f"unknown agent {_q(agent_name)} (defined: {known})")
        if agent_name in resolved:
            raise _fail(source, where, f"agent {_q(agent_name)} is listed twice")
        resolved[agent_name] = agents[agent_name]

    keywords = _string_list(raw.get("keywords", []), "keywords", source, where)
    patterns = _string_list(raw.get("patterns", []), "patterns", source, where)
    if default and (keywords or patterns):
        raise _fail(
            source,
            where,
            "the default rule matches everything; drop its keywords/patterns",
        )
    if not default and not (keywords or patterns):
        raise _fail(source, where, "needs at least one keyword or pattern (or default = true)")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError) as err:
            raise _fail(source, where, f"bad regex {pattern!r}: {err}") from None

    return Rule(
        kind=kind,
        agents=tuple(resolved.values()),
        mode=_mode(raw.get("mode", defaults["mode"]), source, where),
        deadline_ms=_int(
            raw.get("deadline_ms", defaults["deadline_ms"]),
            "deadline_ms",
            source,
            where,
        ),
        default=default,
        # Duplicates would only lengthen the alternation.
        keywords=tuple(dict.fromkeys(keywords)),
        patterns=tuple(dict.fromkeys(patterns)),
    )


def _syntax_error(err: tomllib.TOMLDecodeError, text: str, source: str) -> RoutingTableError:
    message = str(err)
    # Python 3.11's TOMLDecodeError has no lineno attribute; the position ends the message.
    found = _TOML_POSITION_RE.search(message)
    if found is not None:
        line, column = found.groups()
        where = f"line {line}, column {column}"
    elif message.endswith(_END_OF_DOCUMENT):
        where = f"line {text.count(chr(10)) + 1} (end of file)"
    else:
        return RoutingTableError(f"{source}: TOML syntax error: {message}")
    problem = message[: found.start()] if found else message.removesuffix(_END_OF_DOCUMENT)
    return RoutingTableError(f"{source}: {where}: TOML syntax error: {problem}")


def parse_routing_table(text: str, source: str) -> RoutingTable:
    """Parse and validate a routing table; raises RoutingTableError naming `source`."""
    try:
        # Editors on Windows like to start files with a BOM, which tomllib rejects.
        data = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as err:
        raise _syntax_error(err, text, source) from None
    _check_keys(data, _TOP_KEYS, source, "top level")

    defaults = _parse_defaults(data.get("defaults", {}), source)

    raw_agents = data.get("agents", {})
    if not isinstance(raw_agents, dict):
        raise _fail(source, "agents", "must be a table of [agents.NAME] tables")
    agents = {name: _parse_agent(name, raw, defaults, source) for name, raw in raw_agents.items()}

    raw_rules = data.get("rules")
    if raw_rules is None or raw_rules == []:
        raise _fail(source, "rules", "no [[rules]]; at least a default rule is required")
    if not isinstance(raw_rules, list):
        raise _fail(source, "rules", "must be an array of tables ([[rules]])")
    rules: list[Rule] = []
    seen_kinds: dict[str, int] = {}
    for index, raw in enumerate(raw_rules, start=1):
        rule = _parse_rule(index, raw, index == len(raw_rules), agents, defaults, source)
        if rule.kind in seen_kinds:
            raise _fail(
                source,
                _rule_where(index, rule.kind),
                f"duplicate kind {_q(rule.kind)} (already used by rule {seen_kinds[rule.kind]})",
            )
        seen_kinds[rule.kind] = index
        rules.append(rule)

    return RoutingTable(source=source, agents=MappingProxyType(agents), rules=tuple(rules))


def _read(path: str | Path | None) -> tuple[str, str]:
    if path is None:
        try:
            text = resources.files("router").joinpath("routes.toml").read_text(encoding="utf-8")
        except OSError as err:
            # Only a broken install (package data left out of the wheel) gets here.
            raise _UnreadableFileError(f"{PACKAGED_SOURCE}: cannot read it: {err}") from None
        return text, PACKAGED_SOURCE
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise _UnreadableFileError(
            f"{source}: cannot read the routing table: {err.strerror or err}"
        ) from None
    try:
        return data.decode("utf-8"), source
    except UnicodeDecodeError as err:
        raise RoutingTableError(
            f"{source}: not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None


def load_routing_table(path: str | Path | None) -> RoutingTable:
    """Load the table at `path`, or the packaged demo table when `path` is None."""
    text, source = _read(path)
    return parse_routing_table(text, source)


def check_routes_main(path: str) -> int:
    """`router check-routes FILE`: 0 and a summary when valid, 1 when invalid, 2 when unreadable."""
    try:
        table = load_routing_table(path)
    except _UnreadableFileError as err:
        print(err, file=sys.stderr)
        return 2
    except RoutingTableError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{table.source}: OK, {len(table.agents)} agents, {len(table.rules)} rules")
    for agent in table.agents.values():
        print(f"  agent {agent.name}: {' '.join(agent.urls)} timeout_ms={agent.timeout_ms}")
    for index, rule in enumerate(table.rules, start=1):
        targets = ", ".join(a.name for a in rule.agents)
        flag = " (default)" if rule.default else ""
        print(f"  rule {index} {rule.kind}{flag}: {rule.mode} -> {targets}")
    return 0
