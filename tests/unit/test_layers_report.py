"""benches.layers' table: medians per variant, each layer against the variant it builds on."""

from __future__ import annotations

from benches.layers import VARIANTS, Run, errors, report


def _run(cpu_us: float, statuses: dict[str, int] | None = None) -> Run:
    return Run(
        signals=100, cpu_us=cpu_us, database_cpu_us=1.0, rate=1000.0, statuses=statuses or {}
    )


def test_each_layer_is_measured_against_its_own_base_not_the_row_above() -> None:
    cpu = {
        "the handler alone": [20.0, 22.0, 90.0],  # median 22: one outlier does not move it
        "+ log line, metrics": [30.0, 32.0, 31.0],
        "+ database lanes": [50.0, 52.0, 51.0],
        "+ agent call, no database": [80.0, 78.0, 79.0],
        "+ both: as shipped": [116.0, 115.0, 117.0],
    }
    assert list(cpu) == list(VARIANTS)
    rows = report({name: [_run(c) for c in cs] for name, cs in cpu.items()}).splitlines()[2:]
    added = {row.split(" | ")[0].lstrip("| "): row.split(" | ")[2] for row in rows}
    assert added == {
        "the handler alone": "",
        "+ log line, metrics": "+9.0 µs",
        "+ database lanes": "+20.0 µs",
        # Against "+ log line, metrics" (31), not against the database lanes above it.
        "+ agent call, no database": "+48.0 µs",
        "+ both: as shipped": "+65.0 µs",
    }
    assert "| the handler alone | 22.0 µs |" in rows[0]


def test_only_answers_other_than_200_count_as_errors() -> None:
    runs = {
        "the handler alone": [_run(1.0, {"200": 100}), _run(1.0, {"200": 98, "503": 2})],
        "+ log line, metrics": [_run(1.0, {"500": 1, "200": 99})],
    }
    assert errors(runs) == 3
