"""The routing table's file: TOML read and validated by declared models into a RoutingTable.

Every key's type, range and default is declared once, in the pydantic models below (strict,
extra="forbid": a typo is an error, never a silent default). What one key cannot say alone
(the default rule last, known agents, regexes that compile, backoff bounds in order) is checked
after. Every problem is one line naming the file, the place and the key.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import annotated_types
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from router.model import Balance, Mode
from router.routing import AgentConfig, RoutingTable, Rule
from router.signing import ENV_NAME, SigningError, keys_from_env

__all__ = [
    "PACKAGED_SOURCE",
    "RoutingTableError",
    "check_routes_main",
    "load_routing_table",
    "parse_routing_table",
]

PACKAGED_SOURCE = "<packaged router/routes.toml>"
_DAY_MS = 86_400_000
# Replicas are a few URLs, each a label value of agent_attempt_seconds: a bound, not a policy.
MAX_REPLICAS = 64
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_TOML_POSITION_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_END_OF_DOCUMENT = " (at end of document)"


class RoutingTableError(Exception):
    """The routing table could not be loaded."""


class _UnreadableFileError(RoutingTableError):
    """The routing table file could not be read."""


def _problem(message: str) -> PydanticCustomError:
    # The message as the operator reads it; _describe() prints it as it is.
    return PydanticCustomError("routing", "{message}", {"message": message})


def _url(value: str) -> str:
    problem = None
    if any(c.isspace() or not c.isprintable() for c in value):
        problem = "contains whitespace or control characters"
    else:
        from urllib.parse import urlsplit

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
        raise _problem(f"url {value!r} {problem}")
    return value


def _env_name(value: str) -> str:
    if value and ENV_NAME.fullmatch(value) is None:
        raise _problem(f"signing_secrets_env must be an environment variable's name, got {value!r}")
    return value


def _texts(values: list[str]) -> list[str]:
    for item in values:
        if not item.strip():
            raise _problem(f"must hold non-empty strings, got {item!r}")
        if "\x00" in item:
            raise _problem(f"must not contain NUL characters: {item!r}")
    return values


def _name(value: str) -> str:
    if _NAME_RE.fullmatch(value) is None:
        raise _problem(f"must be a non-empty string of [A-Za-z0-9_.-], got {value!r}")
    return value


def _ms(low: int) -> Any:
    return Field(ge=low, le=_DAY_MS)


Url = Annotated[str, AfterValidator(_url)]
Texts = Annotated[list[str], AfterValidator(_texts)]
Name = Annotated[str, AfterValidator(_name)]


class _Table(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class AgentKeys(_Table):
    """What an agent (or [defaults], for every agent) may set."""

    timeout_ms: Annotated[int, _ms(1)] = 2000
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    backoff_initial_ms: Annotated[int, _ms(0)] = 50
    backoff_max_ms: Annotated[int, _ms(0)] = 2000
    concurrency: Annotated[int, Field(ge=1, le=100_000)] = 64
    breaker_failures: Annotated[int, Field(ge=0, le=10_000)] = 5
    breaker_open_ms: Annotated[int, _ms(1)] = 5000
    # TOML writes 1 as an integer: either is a share.
    retry_budget: Annotated[int | float, Field(ge=0, le=1)] = 0.2
    auto_replay: bool = True
    signing_secrets_env: Annotated[str, AfterValidator(_env_name)] = ""
    balance: Balance = "least_latency"


class SignalKeys(_Table):
    """What a rule (or [defaults], for every rule) may set."""

    deadline_ms: Annotated[int, _ms(1)] = 10000
    mode: Mode = "all"


class Defaults(AgentKeys, SignalKeys):
    """[defaults]: every key optional."""


class Agent(AgentKeys):
    """[agents.NAME]: one url, or urls for replicas."""

    url: Url | None = None
    urls: Annotated[list[Url], Field(min_length=1, max_length=MAX_REPLICAS)] | None = None


class RuleKeys(SignalKeys):
    """[[rules]]: tried in order; the last is the default rule."""

    kind: Name
    agents: Texts = []
    keywords: Texts = []
    patterns: Texts = []
    default: bool = False


# The keys an operator may write in each place, in the order the error messages list them.
_ALLOWED = {
    "top level": ("defaults", "agents", "rules"),
    "defaults": tuple(Defaults.model_fields),
    "agent": ("url", "urls", *AgentKeys.model_fields),
    "rule": ("kind", "agents", "keywords", "patterns", "default", *SignalKeys.model_fields),
}


def _q(name: str) -> str:
    """A name double-quoted, with escapes so that a newline cannot split the message."""
    return json.dumps(name, ensure_ascii=False)


def _bounds(model: type[BaseModel], key: str) -> tuple[object, object]:
    low = high = None
    for constraint in model.model_fields[key].metadata:
        if isinstance(constraint, annotated_types.Ge):
            low = constraint.ge
        elif isinstance(constraint, annotated_types.Le):
            high = constraint.le
    return low, high


def _describe(error: ErrorDetails, model: type[BaseModel], place: str) -> str:
    """One pydantic error as the line an operator reads: the key, the problem, the value."""
    loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
    key = loc[0] if loc else ""
    value = error["input"]
    kind = error["type"]
    if kind == "routing":
        message = error["msg"]
        return message if key in ("url", "urls", "signing_secrets_env") else f"{key} {message}"
    if kind == "extra_forbidden":
        return f"unknown key {_q(key)} (allowed: {', '.join(_ALLOWED[place])})"
    if kind == "missing":
        return f"{key} is required"
    if key == "retry_budget":
        return f"retry_budget must be within [0, 1], got {value!r}"
    if key in ("mode", "balance"):
        choices = " or ".join(f'"{c}"' for c in model.model_fields[key].annotation.__args__)  # type: ignore[union-attr]
        return f"{key} must be {choices}, got {value!r}"
    if kind == "bool_type":
        return f"{key} must be true or false, got {value!r}"
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = _bounds(model, key)
        return f"{key} must be between {low} and {high}, got {value}"
    if kind == "int_type":
        return f"{key} must be an integer, got {value!r}"
    if kind in ("list_type", "too_short", "too_long") and key == "urls":
        return f"urls must be a list of 1 to {MAX_REPLICAS} URLs, got {value!r}"
    if kind == "list_type":
        return f"{key} must be a list of strings, got {value!r}"
    if kind == "string_type" and key == "kind":
        return f"kind must be a non-empty string of [A-Za-z0-9_.-], got {value!r}"
    if kind == "string_type" and key == "urls":
        return f"url must be a string, got {value!r}"
    if kind == "string_type" and len(error["loc"]) > 1:
        return f"{key} must hold non-empty strings, got {value!r}"
    if kind == "string_type":
        return f"{key} must be a string, got {value!r}"
    return f"{key}: {error['msg']}"


def _validate(model: type[BaseModel], raw: object, source: str, where: str, place: str) -> Any:
    if not isinstance(raw, dict):
        raise _fail(source, where, "must be a table")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise _fail(source, where, _describe(err.errors()[0], model, place)) from None


def _fail(source: str, where: str, problem: str) -> RoutingTableError:
    return RoutingTableError(f"{source}: {where}: {problem}")


def _agent(name: str, raw: object, defaults: Defaults, source: str) -> AgentConfig:
    where = f"agent {_q(name)}"
    if _NAME_RE.fullmatch(name) is None:
        raise _fail(
            source,
            where,
            f"an agent name must be a non-empty string of [A-Za-z0-9_.-], got {name!r}",
        )
    inherited = defaults.model_dump(include=set(AgentKeys.model_fields))
    merged = {**inherited, **raw} if isinstance(raw, dict) else raw
    agent: Agent = _validate(Agent, merged, source, where, "agent")
    assert isinstance(raw, dict)
    if agent.url is not None and agent.urls is not None:
        raise _fail(source, where, "set url or urls, not both")
    urls = agent.urls or ([agent.url] if agent.url is not None else [])
    if not urls:
        raise _fail(source, where, "url is required (or urls, a list of replicas)")
    repeated = sorted({url for url in urls if urls.count(url) > 1})
    if repeated:
        raise _fail(source, where, f"urls lists {repeated[0]!r} more than once")
    if agent.backoff_max_ms < agent.backoff_initial_ms:
        origin = {k: "" if k in raw else " (from [defaults])" for k in AgentKeys.model_fields}
        raise _fail(
            source,
            where,
            f"backoff_max_ms ({agent.backoff_max_ms}{origin['backoff_max_ms']}) must be"
            f" >= backoff_initial_ms ({agent.backoff_initial_ms}"
            f"{origin['backoff_initial_ms']})",
        )
    keys: tuple[bytes, ...] = ()
    if agent.signing_secrets_env:
        try:
            keys = keys_from_env(agent.signing_secrets_env)
        except SigningError as err:
            raise _fail(source, where, str(err)) from None
    tunables = agent.model_dump(include=set(AgentKeys.model_fields))
    tunables["retry_budget"] = float(tunables["retry_budget"])
    return AgentConfig(name=name, urls=tuple(urls), signing_keys=keys, **tunables)


def _rule_where(index: int, kind: object) -> str:
    if isinstance(kind, str) and kind:
        return f"rule {index} (kind {_q(kind)})"
    return f"rule {index}"


def _rule(
    index: int,
    raw: object,
    is_last: bool,
    agents: Mapping[str, AgentConfig],
    defaults: Defaults,
    source: str,
) -> Rule:
    if not isinstance(raw, dict):
        raise _fail(source, f"rule {index}", "must be a table ([[rules]])")
    where = _rule_where(index, raw.get("kind"))
    inherited = defaults.model_dump(include=set(SignalKeys.model_fields))
    rule: RuleKeys = _validate(RuleKeys, {**inherited, **raw}, source, where, "rule")
    if rule.default and not is_last:
        raise _fail(source, where, "the default rule must be the last rule")
    if is_last and not rule.default:
        raise _fail(source, where, "the last rule must be the default rule (default = true)")
    if not rule.agents:
        raise _fail(source, where, "agents must list at least one agent")
    resolved: dict[str, AgentConfig] = {}
    for name in rule.agents:
        if name not in agents:
            known = ", ".join(agents) or "none"
            raise _fail(source, where, f"unknown agent {_q(name)} (defined: {known})")
        if name in resolved:
            raise _fail(source, where, f"agent {_q(name)} is listed twice")
        resolved[name] = agents[name]
    if rule.default and (rule.keywords or rule.patterns):
        raise _fail(
            source, where, "the default rule matches everything; drop its keywords/patterns"
        )
    if not rule.default and not (rule.keywords or rule.patterns):
        raise _fail(source, where, "needs at least one keyword or pattern (or default = true)")
    for pattern in rule.patterns:
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError) as err:
            raise _fail(source, where, f"bad regex {pattern!r}: {err}") from None
    return Rule(
        kind=rule.kind,
        agents=tuple(resolved.values()),
        mode=rule.mode,
        deadline_ms=rule.deadline_ms,
        default=rule.default,
        # Duplicates would only lengthen the alternation.
        keywords=tuple(dict.fromkeys(rule.keywords)),
        patterns=tuple(dict.fromkeys(rule.patterns)),
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
    for key in data:
        if key not in _ALLOWED["top level"]:
            allowed = ", ".join(_ALLOWED["top level"])
            raise _fail(source, "top level", f"unknown key {_q(key)} (allowed: {allowed})")
    defaults: Defaults = _validate(
        Defaults, data.get("defaults", {}), source, "[defaults]", "defaults"
    )
    raw_agents = data.get("agents", {})
    if not isinstance(raw_agents, dict):
        raise _fail(source, "agents", "must be a table of [agents.NAME] tables")
    agents = {name: _agent(name, raw, defaults, source) for name, raw in raw_agents.items()}

    raw_rules = data.get("rules")
    if raw_rules is None or raw_rules == []:
        raise _fail(source, "rules", "no [[rules]]; at least a default rule is required")
    if not isinstance(raw_rules, list):
        raise _fail(source, "rules", "must be an array of tables ([[rules]])")
    rules: list[Rule] = []
    seen_kinds: dict[str, int] = {}
    for index, raw in enumerate(raw_rules, start=1):
        rule = _rule(index, raw, index == len(raw_rules), agents, defaults, source)
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
