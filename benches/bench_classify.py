"""Classification: a 100-rule table over small and 64 KiB payloads, and the demo table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from router.routing import RoutingTable
from router.routing_file import load_routing_table, parse_routing_table

RULES = 100
WORDS = ("account", "please", "thanks", "order", "status", "question", "hello", "again")


def hundred_rule_table() -> RoutingTable:
    """100 rules of 5 keywords each, every fourth with a regex too, then the default."""
    parts = ['[agents.a]\nurl = "http://127.0.0.1:9/handle"\n']
    for i in range(RULES):
        keywords = ", ".join(f'"topic{i}w{j}"' for j in range(5))
        rule = f'[[rules]]\nkind = "k{i}"\nkeywords = [{keywords}, "phrase {i} here"]\n'
        if i % 4 == 0:
            rule += f"patterns = ['(?i)\\\\bcode-{i}-\\\\d+\\\\b']\n"
        parts.append(rule + 'agents = ["a"]\n')
    parts.append('[[rules]]\nkind = "general"\ndefault = true\nagents = ["a"]\n')
    return parse_routing_table("\n".join(parts), "<bench 100 rules>")


def text_of(size: int, last_word: str = "") -> list[str]:
    """Payload strings of about `size` bytes in 64-byte values, matching no rule but the last."""
    sentence = " ".join(WORDS) + " "
    value = (sentence * (64 // len(sentence) + 1))[:64]
    strings = [value] * (size // 64)
    if last_word:
        strings.append(f"and finally {last_word}")
    return strings


SMALL = ["hello, could you check the status of my order please"]
LARGE = text_of(64 * 1024)
LARGE_LAST_RULE = text_of(64 * 1024, f"topic{RULES - 1}w3")


@pytest.fixture(scope="module")
def table() -> RoutingTable:
    """The 100-rule table, compiled once as at start-up."""
    return hundred_rule_table()


@pytest.mark.parametrize(
    ("case", "strings", "kind"),
    [
        ("classify_100_small", SMALL, "general"),
        ("classify_100_64k", LARGE, "general"),
        ("classify_100_64k_last", LARGE_LAST_RULE, f"k{RULES - 1}"),
    ],
)
def test_classify_100_rules(
    benchmark: Any,
    within_budget: Callable[[str], None],
    table: RoutingTable,
    case: str,
    strings: list[str],
    kind: str,
) -> None:
    """Every rule tried (no match), or the last rule matching, over small and 64 KiB text."""
    rule = benchmark(table.classify, strings)
    assert rule.kind == kind
    within_budget(case)


def test_classify_demo_table_small(benchmark: Any, within_budget: Callable[[str], None]) -> None:
    """The packaged demo table on a one-line message, the common case of the hot path."""
    table = load_routing_table(None)
    rule = benchmark(table.classify, ["help me understand the refund for my invoice"])
    assert rule.kind == "billing"
    within_budget("classify_demo_small")
