"""The hardware kit's markers at work: a `neuron` test is skipped, with the reason, without the Neuron SDK
(torch-xla line) or /dev/neuron0, and a `cuda` test without a GPU torch can see. Each target's figures go
to one JSON record, whose path and headline figures end the run's summary."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import pytest

from tests.hardware.kit import Record, cuda_unavailable, neuron_unavailable, record_dir

UNAVAILABLE: dict[str, Callable[[], str | None]] = {
    "neuron": cache(neuron_unavailable),
    "cuda": cache(cuda_unavailable),
}
_RECORDS: dict[str, Record] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, why in UNAVAILABLE.items():
        if item.get_closest_marker(marker) is not None and (reason := why()) is not None:
            pytest.skip(f"{marker}: {reason}")


@pytest.fixture(scope="session")
def records() -> Callable[[str], Record]:
    """The record of a target, made on first use (so a run where everything skips writes none)."""

    def of(target: str) -> Record:
        if target not in _RECORDS:
            _RECORDS[target] = Record(record_dir() / f"{target}.json", target)
        return _RECORDS[target]

    return of


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for target, record in _RECORDS.items():
        if target == "cpu" and terminalreporter.config.getoption("verbose") <= 0:
            continue  # the default suite's CPU run: no need to shout
        terminalreporter.section(f"hardware kit: {target}")
        terminalreporter.write_line(f"record: {record.path}")
        for key, value in record.data["results"].items():
            terminalreporter.write_line(f"  {key}: {value}")
