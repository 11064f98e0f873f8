"""The parts of the hardware kit that need no hardware: its comparisons, its SNR, its JSON record, its
worker's error handling, and the skip reasons its markers give on this host."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tests.hardware.kit import (
    REPO,
    Record,
    agreement,
    cuda_unavailable,
    neuron_unavailable,
    run_worker,
    snr_db,
)

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=50, deadline=None)
@given(signal=arrays(np.float64, st.integers(1, 200), elements=finite), scale=st.floats(1e-4, 1.0))
def test_snr_of_scaled_noise(signal: np.ndarray, scale: float) -> None:
    """Noise at `scale` times the signal's RMS is 20 log10(1 / scale) dB down, whatever the signal."""
    if not np.any(signal):
        return
    noise = np.roll(signal, 1) if len(signal) > 1 else signal
    if not np.any(noise):
        return
    noise = noise * scale * math.sqrt(np.sum(signal**2) / np.sum(noise**2))
    assert snr_db(signal, signal + noise) == pytest.approx(-20 * math.log10(scale), abs=1e-6)


def test_snr_edges() -> None:
    assert snr_db(np.ones(4), np.ones(4)) == math.inf
    assert snr_db(np.zeros(4), np.ones(4)) == -math.inf
    assert snr_db(np.array([3.0, 4.0]), np.array([3.0, 4.5])) == pytest.approx(10 * math.log10(25 / 0.25))
    with pytest.raises(ValueError, match="lengths differ"):
        snr_db(np.ones(3), np.ones(4))


@settings(max_examples=50, deadline=None)
@given(x=arrays(np.float32, st.integers(1, 64), elements=finite))
def test_agreement_of_a_tensor_with_itself_and_with_its_negation(x: np.ndarray) -> None:
    t = torch.from_numpy(x)
    same = agreement(t, t.clone())
    assert same.max_abs == 0 and same.rel_l2 == 0 and same.finite
    if t.any():
        assert same.cosine == pytest.approx(1.0)
        flipped = agreement(-t, t)
        assert flipped.cosine == pytest.approx(-1.0) and flipped.rel_l2 == pytest.approx(2.0)


def test_agreement_sees_non_finite_values_and_refuses_other_shapes() -> None:
    assert not agreement(torch.tensor([1.0, math.nan]), torch.tensor([1.0, 2.0])).finite
    assert agreement(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1e-3])).max_abs == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="shapes differ"):
        agreement(torch.zeros(2, 3), torch.zeros(3, 2))


def test_record_is_strict_json_rewritten_after_each_addition(tmp_path: Path) -> None:
    path = tmp_path / "out" / "neuron.json"
    record = Record(path, "neuron")
    first = json.loads(path.read_text())
    assert (
        first["target"] == "neuron"
        and first["results"] == {}
        and first["versions"]["torch"] == metadata.version("torch")
    )
    record.add("probe", agreement(torch.ones(3), torch.ones(3)))
    record.add("snr", [math.inf, 31.5, -math.inf, math.nan])
    text = path.read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["results"]["probe"] == {
        "max_abs": 0.0,
        "rel_l2": 0.0,
        "cosine": pytest.approx(1.0),
        "finite": True,
    }
    assert data["results"]["snr"] == ["inf", 31.5, "-inf", "nan"]
    assert not list(path.parent.glob("*.tmp"))


def test_worker_reports_each_failed_job_by_name_and_runs_the_others(tmp_path: Path) -> None:
    jobs = [
        {"name": "no-such-probe", "target": "cpu", "kind": "probe", "probe": "nope", "args": [],
         "path": str(tmp_path / "a.pt2")},
        {"name": "depthwise_conv", "target": "cpu", "kind": "probe", "probe": "depthwise_conv", "args": [],
         "path": str(tmp_path / "b.pt2")},
    ]  # fmt: skip
    bad, good = run_worker("compile", jobs, timeout=120, isolate=False)
    assert bad["error"].startswith("RuntimeError: 'nope'")
    kept = re.search(r"compiler files kept in (\S+)\)$", bad["error"])
    assert kept and Path(kept[1]).is_dir()
    shutil.rmtree(kept[1])
    assert "error" not in good and good["seconds"] > 0 and good["peak_rss_mb"] > 0
    assert (tmp_path / "b.pt2").is_file()


def test_worker_that_dies_costs_only_its_own_job() -> None:
    (answer,) = run_worker("no-such-command", [{"name": "x"}], timeout=60, isolate=True)
    assert answer["error"].startswith("no-such-command x: exit status 1")


@pytest.mark.skipif(Path("/dev/neuron0").exists(), reason="a Neuron device is present")
def test_neuron_tests_skip_here_with_the_reason() -> None:
    assert neuron_unavailable() == "no /dev/neuron0: not an inf2 host"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_tests_skip_here_with_the_reason() -> None:
    assert "needs a CUDA GPU" in str(cuda_unavailable())


@pytest.mark.slow
@pytest.mark.skipif(Path("/dev/neuron0").exists(), reason="a Neuron device is present")
def test_the_smoke_command_collects_the_kit_and_skips_it_cleanly() -> None:
    """What `make neuron-smoke` runs: every neuron test is collected and skipped with its reason."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "neuron", "-rs", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*command, "tests/hardware"], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0, result.stdout[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " skipped" in summary and "passed" not in summary and "failed" not in summary, summary
    assert "neuron: no /dev/neuron0: not an inf2 host" in result.stdout
