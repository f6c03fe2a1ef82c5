"""Unit tests for the routing table: loading, validation and classification."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.routing import AgentConfig, RoutingTable, Rule
from router.routing_file import (
    RoutingTableError,
    check_routes_main,
    load_routing_table,
    parse_routing_table,
)

AGENTS = """
[agents.a]
url = "http://127.0.0.1:9001/handle"

[agents.b]
url = "https://agents.example.com:8443/b"
"""

DEFAULT_RULE = """
[[rules]]
kind = "fallback"
default = true
agents = ["a"]
"""


def table(rules: str, *, head: str = AGENTS, source: str = "t.toml") -> RoutingTable:
    return parse_routing_table(head + rules + DEFAULT_RULE, source)


def kind_of(t: RoutingTable, *strings: str) -> str:
    return t.classify(list(strings)).kind


def load_error(text: str, source: str = "t.toml") -> str:
    with pytest.raises(RoutingTableError) as info:
        parse_routing_table(text, source)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- the packaged table ----------------------------------------------------------------


def test_packaged_table_loads_with_the_documented_kinds_and_agents() -> None:
    """The packaged demo table loads and has the documented kinds, agents and settings."""
    t = load_routing_table(None)
    assert t.kinds == ("policy_question", "urgent", "billing", "general")
    assert list(t.agents) == ["policy", "support", "billing"]
    assert t.agents["support"].timeout_ms == 500
    assert t.agents["policy"].timeout_ms == 2000
    assert t.agents["billing"].urls == ("http://127.0.0.1:9103/handle",)
    urgent = t.rules[1]
    assert urgent.mode == "first_success"
    assert [a.name for a in urgent.agents] == ["support", "policy"]
    assert [a.name for a in t.rules[2].agents] == ["billing", "support"]
    assert t.rules[-1].default and [a.name for a in t.rules[-1].agents] == ["support"]


def test_packaged_table_classifies_the_demo_signals() -> None:
    """The packaged table sends each demo signal to its documented kind."""
    t = load_routing_table(None)
    assert kind_of(t, "help me understand policy") == "policy_question"
    assert kind_of(t, "GDPR request") == "policy_question"
    assert kind_of(t, "the site is DOWN") == "urgent"
    assert kind_of(t, "please refund my last invoice") == "billing"
    assert kind_of(t, "hello there") == "general"
    assert kind_of(t, "countdown to launch") == "general"


# --- defaults and overrides --------------------------------------------------------------


def test_builtin_defaults_apply_when_nothing_is_set() -> None:
    """Without [defaults] every agent and rule gets the documented built-in values."""
    t = table('[[rules]]\nkind = "k"\nkeywords = ["x"]\nagents = ["a"]\n')
    assert t.agents["a"] == AgentConfig(
        name="a",
        urls=("http://127.0.0.1:9001/handle",),
        timeout_ms=2000,
        max_attempts=3,
        backoff_initial_ms=50,
        backoff_max_ms=2000,
        concurrency=64,
    )
    assert (t.rules[0].deadline_ms, t.rules[0].mode) == (10000, "all")
    assert (t.rules[1].deadline_ms, t.rules[1].mode) == (10000, "all")


def test_defaults_section_then_agent_keys_override_builtins() -> None:
    """[defaults] replaces the built-ins and an agent's own keys replace [defaults]."""
    head = """
[defaults]
timeout_ms = 300
max_attempts = 5
backoff_initial_ms = 10
backoff_max_ms = 100
concurrency = 8

[agents.a]
url = "http://a.local/x"
timeout_ms = 50
concurrency = 1

[agents.b]
url = "http://b.local/x"
backoff_initial_ms = 0
"""
    t = table('[[rules]]\nkind = "k"\nkeywords = ["x"]\nagents = ["a", "b"]\n', head=head)
    a, b = t.agents["a"], t.agents["b"]
    assert (a.timeout_ms, a.max_attempts, a.backoff_initial_ms, a.backoff_max_ms) == (
        50,
        5,
        10,
        100,
    )
    assert a.concurrency == 1
    assert (b.timeout_ms, b.max_attempts, b.backoff_initial_ms, b.concurrency) == (300, 5, 0, 8)
    assert t.rules[0].agents == (a, b)


def test_rule_keys_override_the_signal_defaults() -> None:
    """deadline_ms and mode come from [defaults] unless the rule sets its own."""
    head = '[defaults]\ndeadline_ms = 4000\nmode = "first_success"\n' + AGENTS
    rules = """
[[rules]]
kind = "own"
keywords = ["x"]
agents = ["a"]
deadline_ms = 250
mode = "all"

[[rules]]
kind = "inherits"
keywords = ["y"]
agents = ["b"]
"""
    t = table(rules, head=head)
    assert (t.rules[0].deadline_ms, t.rules[0].mode) == (250, "all")
    assert (t.rules[1].deadline_ms, t.rules[1].mode) == (4000, "first_success")
    assert (t.rules[2].deadline_ms, t.rules[2].mode) == (4000, "first_success")


def test_agents_keep_file_order_and_unused_agents_are_allowed() -> None:
    """Agents are listed in file order, including one that no rule uses."""
    t = table('[[rules]]\nkind = "k"\nkeywords = ["x"]\nagents = ["b"]\n')
    assert list(t.agents) == ["a", "b"]
    assert [a.name for a in t.rules[0].agents] == ["b"]


def test_kinds_lists_every_rule_in_order() -> None:
    """kinds lists every rule's kind in file order, the default last."""
    t = table(
        '[[rules]]\nkind = "z.last-ish"\nkeywords = ["x"]\nagents = ["a"]\n'
        '[[rules]]\nkind = "A_1"\nkeywords = ["y"]\nagents = ["a"]\n'
    )
    assert t.kinds == ("z.last-ish", "A_1", "fallback")


# --- classification ----------------------------------------------------------------------

ORDERED = """
[[rules]]
kind = "first"
keywords = ["alpha"]
agents = ["a"]

[[rules]]
kind = "second"
keywords = ["alpha", "beta"]
agents = ["b"]
"""


def test_first_matching_rule_wins() -> None:
    """When several rules match, the one listed first decides."""
    t = table(ORDERED)
    assert kind_of(t, "beta and alpha") == "first"
    assert kind_of(t, "beta only") == "second"
    assert [a.name for a in t.classify(["beta"]).agents] == ["b"]


def test_unmatched_or_empty_payload_gets_the_default_rule() -> None:
    """A payload no rule matches, or one with no strings at all, goes to the default rule."""
    t = table(ORDERED)
    assert kind_of(t, "gamma", "delta") == "fallback"
    assert t.classify([]).default
    assert kind_of(t, "") == "fallback"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("policy", "k"),
        ("Policy?", "k"),
        ("read the POLICY.", "k"),
        ("(policy)", "k"),
        ("policyholder", "fallback"),
        ("nopolicy", "fallback"),
        ("my_policy", "fallback"),
        ("policy2", "fallback"),
    ],
)
def test_keywords_are_whole_words_and_case_insensitive(text: str, expected: str) -> None:
    """A keyword matches in any case but only as a whole word."""
    t = table('[[rules]]\nkind = "k"\nkeywords = ["policy"]\nagents = ["a"]\n')
    assert kind_of(t, text) == expected


def test_keywords_are_found_in_any_of_the_strings() -> None:
    """A keyword in any one of the payload's strings (nested values flattened) matches."""
    t = table('[[rules]]\nkind = "k"\nkeywords = ["refund"]\nagents = ["a"]\n')
    assert kind_of(t, "user_1", "hello", "nested: I want a REFUND") == "k"
    assert kind_of(t, "user_1", "hello", "refunded") == "fallback"


@pytest.mark.parametrize(
    ("strings", "expected"),
    [
        (["we had a data breach"], "k"),
        (["Data  Breach!"], "k"),
        (["data\nbreach"], "k"),
        (["data", "breach"], "fallback"),
        (["database breach"], "fallback"),
        (["data breaches"], "fallback"),
    ],
)
def test_phrase_keywords_match_the_phrase_within_one_string(
    strings: list[str], expected: str
) -> None:
    """A multi-word keyword matches the words in sequence across any whitespace, in one string."""
    t = table('[[rules]]\nkind = "k"\nkeywords = ["data breach"]\nagents = ["a"]\n')
    assert t.classify(strings).kind == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I write C++, mostly", "cpp"),
        ("c++", "cpp"),
        ("c", "fallback"),
        ("this is #URGENT", "tag"),
        ("x#urgent", "fallback"),
        ("send an E-Mail", "mail"),
        ("e-mails", "fallback"),
        ("email", "fallback"),
    ],
)
def test_keywords_with_punctuation_still_match_whole_words(text: str, expected: str) -> None:
    """Keywords starting, ending or containing punctuation match as whole words."""
    rules = """
[[rules]]
kind = "cpp"
keywords = ["c++"]
agents = ["a"]

[[rules]]
kind = "tag"
keywords = ["#urgent"]
agents = ["a"]

[[rules]]
kind = "mail"
keywords = ["e-mail"]
agents = ["a"]
"""
    assert kind_of(table(rules), text) == expected


def test_keywords_compare_with_unicode_case_folding() -> None:
    """Keywords compare case-insensitively beyond ASCII, with Unicode case folding."""
    t = table('[[rules]]\nkind = "k"\nkeywords = ["straße", "ÉTAT"]\nagents = ["a"]\n')
    assert kind_of(t, "STRASSE 5") == "k"
    assert kind_of(t, "l'état") == "k"
    assert kind_of(t, "etat") == "fallback"


def test_patterns_are_searched_in_each_string_separately() -> None:
    """Patterns are Python regexes searched per string, so anchors apply to one value."""
    rules = """
[[rules]]
kind = "ref"
patterns = ['^ref-\\d+$']
agents = ["a"]
"""
    t = table(rules)
    assert kind_of(t, "hello", "ref-42") == "ref"
    assert kind_of(t, "hello ref-42") == "fallback"
    assert kind_of(t, "REF-42") == "fallback"


def test_rule_with_keywords_and_patterns_matches_on_either() -> None:
    """A rule with both keywords and patterns matches when either one does."""
    rules = """
[[rules]]
kind = "k"
keywords = ["outage"]
patterns = ['(?i)\\bdown\\b', 'err(or)?-\\d{3}']
agents = ["a"]
"""
    t = table(rules)
    assert kind_of(t, "Outage in eu-west") == "k"
    assert kind_of(t, "it is DOWN") == "k"
    assert kind_of(t, "got error-503") == "k"
    assert kind_of(t, "countdown") == "fallback"


def test_large_payload_is_classified_by_a_late_match() -> None:
    """A match at the end of a large payload among many rules is still found, in order."""
    rules = "".join(
        f'[[rules]]\nkind = "r{i}"\nkeywords = ["word{i}x", "w{i} y"]\nagents = ["a"]\n'
        f'[[rules]]\nkind = "p{i}"\npatterns = ["^zz{i}$"]\nagents = ["a"]\n'
        for i in range(50)
    )
    t = table(rules)
    filler = ["lorem ipsum dolor sit amet " * 40] * 60
    assert kind_of(t, *filler) == "fallback"
    assert kind_of(t, *filler, "zz48", "W7   Y") == "r7"
    assert kind_of(t, *filler, "zz48") == "p48"


def test_rules_built_directly_compile_their_matchers() -> None:
    """A Rule constructed in code (as other modules' tests do) classifies like a loaded one."""
    agent = AgentConfig("a", ("http://a/x",), 1000, 1, 0, 0, 1)
    rule = Rule("k", (agent,), "all", 1000, False, keywords=("hi there",), patterns=("^x",))
    fallback = Rule("d", (agent,), "all", 1000, True)
    t = RoutingTable("<code>", {"a": agent}, (rule, fallback))
    assert t.classify(["well, HI there"]) is rule
    assert t.classify(["xyz"]) is rule
    assert t.classify(["hi"]) is fallback
    with pytest.raises(ValueError, match="default"):
        RoutingTable("<code>", {"a": agent}, (rule,))


# --- errors -------------------------------------------------------------------------------

RULE_K = '[[rules]]\nkind = "k"\nkeywords = ["x"]\nagents = ["a"]\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            AGENTS + "[[rules]]\nkind = k\n",
            "t.toml: line 8, column 8: TOML syntax error: Invalid value",
            id="syntax",
        ),
        pytest.param(
            AGENTS + "[[rules]]\nkind = 'k'\nagents = [\n",
            "t.toml: line 10 (end of file): TOML syntax error: ",
            id="syntax-at-end",
        ),
        pytest.param(
            "[agents.a]\nurl = 'http://a/x'\nurl = 'http://b/x'\n",
            "t.toml: line 3, column 19: TOML syntax error: Cannot overwrite a value",
            id="duplicate-key",
        ),
        pytest.param(
            "routes = 1\n" + AGENTS + DEFAULT_RULE,
            't.toml: top level: unknown key "routes" (allowed: defaults, agents, rules)',
            id="unknown-top-level-key",
        ),
        pytest.param(
            "[defaults]\nurl = 'http://x/'\n" + AGENTS + DEFAULT_RULE,
            't.toml: [defaults]: unknown key "url"',
            id="unknown-defaults-key",
        ),
        pytest.param(
            "defaults = 3\n" + AGENTS + DEFAULT_RULE,
            "t.toml: [defaults]: must be a table",
            id="defaults-not-table",
        ),
        pytest.param(
            AGENTS.replace('9001/handle"', '9001/handle"\nmode = "all"') + DEFAULT_RULE,
            't.toml: agent "a": unknown key "mode" (allowed: url, urls, timeout_ms,',
            id="signal-key-on-agent",
        ),
        pytest.param(
            AGENTS
            + RULE_K.replace('agents = ["a"]', 'agents = ["a"]\ntimeout_ms = 5')
            + DEFAULT_RULE,
            't.toml: rule 1 (kind "k"): unknown key "timeout_ms" (allowed: kind, agents,',
            id="agent-key-on-rule",
        ),
        pytest.param(
            "agents = ['a']\n" + DEFAULT_RULE,
            "t.toml: agents: must be a table",
            id="agents-not-table",
        ),
        pytest.param(
            "[agents]\na = 'http://a/x'\n" + DEFAULT_RULE,
            't.toml: agent "a": must be a table',
            id="agent-not-table",
        ),
        pytest.param(
            '[agents."bad name"]\nurl = "http://a/x"\n' + DEFAULT_RULE,
            't.toml: agent "bad name": an agent name must be a non-empty string of [A-Za-z0-9_.-]',
            id="bad-agent-name",
        ),
        pytest.param(
            "[agents.a]\ntimeout_ms = 5\n" + DEFAULT_RULE,
            't.toml: agent "a": url is required',
            id="missing-url",
        ),
        pytest.param(
            "[agents.a]\nurl = 'ftp://a/x'\n" + DEFAULT_RULE,
            "t.toml: agent \"a\": url 'ftp://a/x' must start with http:// or https://",
            id="url-scheme",
        ),
        pytest.param(
            "[agents.a]\nurl = 'http:///x'\n" + DEFAULT_RULE,
            "t.toml: agent \"a\": url 'http:///x' has no host",
            id="url-no-host",
        ),
        pytest.param(
            "[agents.a]\nurl = 'http://a b/x'\n" + DEFAULT_RULE,
            "t.toml: agent \"a\": url 'http://a b/x' contains whitespace",
            id="url-space",
        ),
        pytest.param(
            "[agents.a]\nurl = 'http://a:99999/x'\n" + DEFAULT_RULE,
            "t.toml: agent \"a\": url 'http://a:99999/x' Port out of range",
            id="url-port",
        ),
        pytest.param(
            "[agents.a]\nurl = 7\n" + DEFAULT_RULE,
            't.toml: agent "a": url must be a string, got 7',
            id="url-type",
        ),
        pytest.param(
            "[agents.a]\nurl = 'http://a/x'\ntimeout_ms = 0\n" + DEFAULT_RULE,
            't.toml: agent "a": timeout_ms must be between 1 and 86400000, got 0',
            id="timeout-zero",
        ),
        pytest.param(
            "[agents.a]\nurl = 'http://a/x'\nmax_attempts = true\n" + DEFAULT_RULE,
            't.toml: agent "a": max_attempts must be an integer, got True',
            id="bool-not-int",
        ),
        pytest.param(
            "[agents.a]\nurl = 'http://a/x'\nconcurrency = 2.0\n" + DEFAULT_RULE,
            't.toml: agent "a": concurrency must be an integer, got 2.0',
            id="float-not-int",
        ),
        pytest.param(
            "[agents.a]\nurl = 'http://a/x'\nbackoff_initial_ms = -1\n" + DEFAULT_RULE,
            't.toml: agent "a": backoff_initial_ms must be between 0 and',
            id="negative-backoff",
        ),
        pytest.param(
            "[agents.a]\nurl = 'http://a/x'\nbackoff_initial_ms = 5000\n" + DEFAULT_RULE,
            't.toml: agent "a": backoff_max_ms (2000 (from [defaults])) must be >= '
            "backoff_initial_ms (5000)",
            id="backoff-max-below-initial",
        ),
        pytest.param(
            "[defaults]\nmax_attempts = 0\n" + AGENTS + DEFAULT_RULE,
            "t.toml: [defaults]: max_attempts must be between 1 and 100, got 0",
            id="defaults-range",
        ),
        pytest.param(
            "[defaults]\ndeadline_ms = '10s'\n" + AGENTS + DEFAULT_RULE,
            "t.toml: [defaults]: deadline_ms must be an integer, got '10s'",
            id="defaults-type",
        ),
        pytest.param(
            "[defaults]\nmode = 'any'\n" + AGENTS + DEFAULT_RULE,
            't.toml: [defaults]: mode must be "all" or "first_success", got \'any\'',
            id="defaults-mode",
        ),
        pytest.param(
            AGENTS
            + RULE_K.replace('agents = ["a"]', 'agents = ["a"]\nmode = "ALL"')
            + DEFAULT_RULE,
            't.toml: rule 1 (kind "k"): mode must be "all" or "first_success"',
            id="rule-mode",
        ),
        pytest.param(
            AGENTS
            + RULE_K.replace('agents = ["a"]', 'agents = ["a"]\ndeadline_ms = 0')
            + DEFAULT_RULE,
            't.toml: rule 1 (kind "k"): deadline_ms must be between 1 and',
            id="rule-deadline",
        ),
        pytest.param(
            AGENTS
            + RULE_K
            + "[[rules]]\nkind = 'urgent'\npatterns = ['ok', '(?i)(']\nagents = ['a']\n"
            + DEFAULT_RULE,
            "t.toml: rule 2 (kind \"urgent\"): bad regex '(?i)(': missing ), unterminated "
            "subpattern at position 4",
            id="bad-regex",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('["a"]', '["a", "ghost"]') + DEFAULT_RULE,
            't.toml: rule 1 (kind "k"): unknown agent "ghost" (defined: a, b)',
            id="unknown-agent",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('["a"]', '["a", "b", "a"]') + DEFAULT_RULE,
            't.toml: rule 1 (kind "k"): agent "a" is listed twice',
            id="duplicate-agent",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('["a"]', "[]") + DEFAULT_RULE,
            't.toml: rule 1 (kind "k"): agents must list at least one agent',
            id="no-agents",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('agents = ["a"]\n', "") + DEFAULT_RULE,
            't.toml: rule 1 (kind "k"): agents must list at least one agent',
            id="missing-agents",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('["a"]', '"a"') + DEFAULT_RULE,
            't.toml: rule 1 (kind "k"): agents must be a list of strings',
            id="agents-not-list",
        ),
        pytest.param(
            AGENTS + RULE_K,
            't.toml: rule 1 (kind "k"): the last rule must be the default rule (default = true)',
            id="no-default",
        ),
        pytest.param(
            AGENTS + DEFAULT_RULE + RULE_K,
            't.toml: rule 1 (kind "fallback"): the default rule must be the last rule',
            id="default-not-last",
        ),
        pytest.param(
            AGENTS + DEFAULT_RULE + DEFAULT_RULE.replace("fallback", "other"),
            't.toml: rule 1 (kind "fallback"): the default rule must be the last rule',
            id="two-defaults",
        ),
        pytest.param(
            AGENTS + DEFAULT_RULE.replace("default = true", 'default = "yes"'),
            't.toml: rule 1 (kind "fallback"): default must be true or false',
            id="default-not-bool",
        ),
        pytest.param(
            AGENTS + DEFAULT_RULE.replace("default = true", "default = true\nkeywords = ['x']"),
            't.toml: rule 1 (kind "fallback"): the default rule matches everything',
            id="default-with-keywords",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('keywords = ["x"]\n', "") + DEFAULT_RULE,
            't.toml: rule 1 (kind "k"): needs at least one keyword or pattern',
            id="rule-matches-nothing",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('["x"]', "[]") + DEFAULT_RULE,
            't.toml: rule 1 (kind "k"): needs at least one keyword or pattern',
            id="empty-keywords",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('["x"]', '["x", "  "]') + DEFAULT_RULE,
            "t.toml: rule 1 (kind \"k\"): keywords must hold non-empty strings, got '  '",
            id="blank-keyword",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('["x"]', '["x", 3]') + DEFAULT_RULE,
            't.toml: rule 1 (kind "k"): keywords must hold non-empty strings, got 3',
            id="keyword-not-string",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('keywords = ["x"]', "patterns = 'x'") + DEFAULT_RULE,
            "t.toml: rule 1 (kind \"k\"): patterns must be a list of strings, got 'x'",
            id="patterns-not-list",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('["x"]', '["x\\u0000y"]') + DEFAULT_RULE,
            't.toml: rule 1 (kind "k"): keywords must not contain NUL',
            id="keyword-nul",
        ),
        pytest.param(
            AGENTS + RULE_K + RULE_K.replace('"x"', '"y"') + DEFAULT_RULE,
            't.toml: rule 2 (kind "k"): duplicate kind "k" (already used by rule 1)',
            id="duplicate-kind",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('kind = "k"\n', "") + DEFAULT_RULE,
            "t.toml: rule 1: kind is required",
            id="missing-kind",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('"k"', '"two words"') + DEFAULT_RULE,
            't.toml: rule 1 (kind "two words"): kind must be a non-empty string of [A-Za-z0-9_.-]',
            id="bad-kind",
        ),
        pytest.param(
            AGENTS + RULE_K.replace('"k"', '""') + DEFAULT_RULE,
            "t.toml: rule 1: kind must be a non-empty string of [A-Za-z0-9_.-], got ''",
            id="empty-kind",
        ),
        pytest.param(
            AGENTS,
            "t.toml: rules: no [[rules]]; at least a default rule is required",
            id="no-rules",
        ),
        pytest.param(
            "rules = 'x'\n" + AGENTS,
            "t.toml: rules: must be an array of tables",
            id="rules-not-array",
        ),
        pytest.param(
            "rules = [1]\n" + AGENTS,
            "t.toml: rule 1: must be a table",
            id="rule-not-table",
        ),
    ],
)
def test_invalid_tables_name_the_file_and_the_fault(text: str, expected: str) -> None:
    """Each kind of invalid table raises one line naming the file, the place and the problem."""
    assert expected in load_error(text)


def test_names_with_newlines_are_escaped_to_keep_one_line() -> None:
    """A name holding a newline is quoted with escapes, so the message stays on one line."""
    message = load_error('[agents."a\\nb"]\nurl = "http://a/x"\n' + DEFAULT_RULE)
    assert message.startswith('t.toml: agent "a\\nb": an agent name must be')


def test_errors_name_the_source_they_were_given() -> None:
    """The error message starts with the source name passed in, such as a full path."""
    message = load_error(AGENTS + RULE_K, source="/etc/router/routes.toml")
    assert message.startswith('/etc/router/routes.toml: rule 1 (kind "k"): ')


def test_missing_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    """A routing table file that does not exist raises RoutingTableError naming its path."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(RoutingTableError, match=r"nope\.toml: cannot read the routing table"):
        load_routing_table(missing)


def test_non_utf8_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    """A routing table that is not UTF-8 raises RoutingTableError naming the file."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(RoutingTableError, match=r"latin1\.toml: not UTF-8 text"):
        load_routing_table(str(path))


def test_file_with_bom_loads_and_source_is_the_path(tmp_path: Path) -> None:
    """A file starting with a UTF-8 BOM loads, and the table's source is the given path."""
    path = tmp_path / "routes.toml"
    path.write_text("\ufeff" + AGENTS + RULE_K + DEFAULT_RULE, encoding="utf-8")
    t = load_routing_table(path)
    assert t.source == str(path)
    assert t.kinds == ("k", "fallback")


# --- router check-routes -----------------------------------------------------------------


def test_check_routes_prints_a_summary_and_returns_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-routes on a valid file prints its agents and rules and returns 0."""
    path = tmp_path / "routes.toml"
    path.write_text(AGENTS + RULE_K + DEFAULT_RULE, encoding="utf-8")
    assert check_routes_main(str(path)) == 0
    out, err = capsys.readouterr()
    assert f"{path}: OK, 2 agents, 2 rules" in out
    assert "rule 1 k: all -> a" in out
    assert "rule 2 fallback (default): all -> a" in out
    assert err == ""


def test_check_routes_prints_the_error_and_returns_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-routes on an invalid file prints the error to stderr and returns 1."""
    path = tmp_path / "bad.toml"
    path.write_text(AGENTS + RULE_K.replace('["a"]', '["zed"]') + DEFAULT_RULE, encoding="utf-8")
    assert check_routes_main(str(path)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f'{path}: rule 1 (kind "k"): unknown agent "zed" (defined: a, b)'


def test_check_routes_returns_2_for_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-routes on a missing file prints why to stderr and returns 2."""
    assert check_routes_main(str(tmp_path / "missing.toml")) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "missing.toml: cannot read the routing table" in err


# --- agent health keys -------------------------------------------------------------------


def test_breaker_and_budget_keys_default_and_override_per_agent() -> None:
    """breaker_*, retry_budget and auto_replay come from [defaults] or the agent."""
    head = "[defaults]\nbreaker_failures = 2\nretry_budget = 0.5\n" + AGENTS.replace(
        '9001/handle"', '9001/handle"\nauto_replay = false\nbreaker_open_ms = 10'
    )
    t = table("", head=head)
    a, b = t.agents["a"], t.agents["b"]
    assert (a.breaker_failures, a.breaker_open_ms, a.retry_budget, a.auto_replay) == (
        2,
        10,
        0.5,
        False,
    )
    assert (b.breaker_failures, b.breaker_open_ms, b.retry_budget, b.auto_replay) == (
        2,
        5000,
        0.5,
        True,
    )


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("retry_budget = 1.5", "retry_budget must be within [0, 1], got 1.5"),
        ("retry_budget = true", "retry_budget must be within [0, 1], got True"),
        ('auto_replay = "yes"', "auto_replay must be true or false, got 'yes'"),
        ("breaker_failures = -1", "breaker_failures must be between 0 and 10000, got -1"),
        ("breaker_open_ms = 0", "breaker_open_ms must be between 1 and 86400000, got 0"),
    ],
)
def test_bad_agent_health_keys_name_the_key(line: str, problem: str) -> None:
    message = load_error("[defaults]\n" + line + "\n" + AGENTS + DEFAULT_RULE)
    assert message.startswith("t.toml: [defaults]: ") and message.endswith(problem), message


def test_signing_secrets_are_read_at_load_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """signing_secrets_env names a variable; its secrets are keys, kept out of repr and output."""
    secret = "whsec_c2VjcmV0LW9uZQ"
    monkeypatch.setenv("A_SECRETS", f"{secret} c2Vjb25k")
    head = AGENTS.replace('9001/handle"', '9001/handle"\nsigning_secrets_env = "A_SECRETS"')
    a = table("", head=head).agents["a"]
    assert a.signing_keys == (b"secret-one", b"second")
    assert "secret-one" not in repr(a) and "c2Vj" not in repr(a)
    path = tmp_path / "routes.toml"
    path.write_text(head + DEFAULT_RULE)
    assert check_routes_main(str(path)) == 0
    out = capsys.readouterr()
    assert "c2Vj" not in out.out + out.err and "secret-one" not in out.out + out.err


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({}, "signing_secrets_env: $A_SECRETS is not set or empty"),
        ({"A_SECRETS": "ok=== not*base64"}, "secret 1 of $A_SECRETS is not base64"),
    ],
)
def test_unreadable_signing_secrets_stop_the_load_without_showing_them(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], problem: str
) -> None:
    monkeypatch.delenv("A_SECRETS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    head = AGENTS.replace('9001/handle"', '9001/handle"\nsigning_secrets_env = "A_SECRETS"')
    message = load_error(head + DEFAULT_RULE)
    assert message.startswith('t.toml: agent "a": ') and message.endswith(problem), message
    for secret in env.get("A_SECRETS", "").split():
        assert secret not in message


# --- replicas ---------------------------------------------------------------------------

REPLICAS = """
[agents.a]
{keys}

[[rules]]
kind = "fallback"
default = true
agents = ["a"]
"""


def test_an_agent_lists_its_replicas_and_how_to_balance_them() -> None:
    keys = 'urls = ["http://127.0.0.1:9001/h", "http://127.0.0.1:9002/h"]\nbalance = "round_robin"'
    agent = parse_routing_table(REPLICAS.format(keys=keys), "t.toml").agents["a"]
    assert agent.urls == ("http://127.0.0.1:9001/h", "http://127.0.0.1:9002/h")
    assert agent.balance == "round_robin"
    one = parse_routing_table(REPLICAS.format(keys='url = "http://h/x"'), "t.toml").agents["a"]
    assert (one.urls, one.balance) == (("http://h/x",), "least_latency")


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ('url = "http://h/x"\nurls = ["http://h/y"]', "set url or urls, not both"),
        ("urls = []", "urls must be a list of 1 to 64 URLs, got []"),
        ('urls = "http://h/x"', "urls must be a list of 1 to 64 URLs, got 'http://h/x'"),
        ('urls = ["http://h/x", "ftp://h/y"]', "url 'ftp://h/y' must start with http://"),
        ('urls = ["http://h/x", "http://h/x"]', "urls lists 'http://h/x' more than once"),
        ('url = "http://h/x"\nbalance = "fastest"', 'balance must be "least_latency" or'),
    ],
)
def test_bad_replicas_are_refused_with_the_reason(keys: str, expected: str) -> None:
    assert f't.toml: agent "a": {expected}' in load_error(REPLICAS.format(keys=keys))


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ('urls = ["http://h/x", 5]', "url must be a string, got 5"),
        ('url = "http://h/x"\nretry_budget = true', "retry_budget must be within [0, 1], got True"),
        ('url = "http://h/x"\nauto_replay = 1', "auto_replay must be true or false, got 1"),
        ('url = "http://h/x"\nbalance = 3', 'balance must be "least_latency" or "round_robin"'),
        (
            'url = "http://h/x"\nsigning_secrets_env = "1x"',
            "signing_secrets_env must be an environment",
        ),
    ],
)
def test_each_declared_key_says_what_it_takes(keys: str, expected: str) -> None:
    """The declared models' errors read like the rest: the key, what it takes, the value."""
    assert f't.toml: agent "a": {expected}' in load_error(REPLICAS.format(keys=keys))


def test_a_whole_number_is_a_retry_budget_too() -> None:
    """TOML writes 1 as an integer; the budget is a share either way."""
    keys = 'url = "http://h/x"\nretry_budget = 1'
    agent = parse_routing_table(REPLICAS.format(keys=keys), "t.toml").agents["a"]
    assert agent.retry_budget == 1.0 and isinstance(agent.retry_budget, float)
