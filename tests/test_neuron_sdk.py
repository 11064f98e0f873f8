"""The Neuron target's SDK checks, read from real distribution metadata made in tmp_path (the SDK itself
cannot be installed here): which versions it accepts, what it says otherwise, what a manifest records."""

from __future__ import annotations

from pathlib import Path

import pytest

from tts_neuron.backends.neuron import NeuronTarget, installed_versions, sdk_problem
from tts_neuron.errors import TargetUnavailableError

XLA_LINE = {"torch-neuronx": "2.9.0.2.15.32035", "torch": "2.9.1", "neuronx-cc": "2.27.5334.0"}


def install_metadata(root: Path, versions: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Distributions with these versions, first on sys.path, as pip would leave their dist-info."""
    for name, version in versions.items():
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    monkeypatch.syspath_prepend(str(root))


def test_versions_are_read_by_distribution_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_metadata(tmp_path, XLA_LINE, monkeypatch)
    assert installed_versions() == XLA_LINE
    assert sdk_problem(installed_versions()) is None
    assert NeuronTarget().compiler_version() == "torch-neuronx 2.9.0.2.15.32035, neuronx-cc 2.27.5334.0"


@pytest.mark.parametrize(
    ("versions", "says"),
    [
        ({"torch-neuronx": "2.14.3.0", "torch": "2.14.0"}, "torch-neuronx 2.14.3.0 is TorchNeuron"),
        ({"torch-neuronx": "2.10.0.1"}, "is TorchNeuron, the native backend for Trn2/Trn3"),
        ({"torch-neuronx": "1.0"}, r"torch-neuronx 1.0 is installed, inf2 needs 2\.9\.0\.2\.15\.\*"),
        ({"torch": "2.13.0"}, r"torch 2.13.0 is installed, inf2 needs 2\.9\.\*"),
        ({"neuronx-cc": "1.0.post1"}, r"neuronx-cc 1.0.post1 is installed, inf2 needs 2\.\*"),
    ],
)
def test_the_wrong_sdk_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, versions: dict[str, str], says: str
) -> None:
    install_metadata(tmp_path, {**XLA_LINE, **versions}, monkeypatch)
    with pytest.raises(TargetUnavailableError, match=says) as refused:
        NeuronTarget().check_available()
    message = str(refused.value)
    assert "\n" not in message
    assert "pip install 'tts-neuron[neuron]'" in message and "Deep Learning AMI" in message


def test_the_right_versions_then_need_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Metadata alone is not the SDK: with the right versions but no torch_neuronx module, import fails."""
    install_metadata(tmp_path, XLA_LINE, monkeypatch)
    with pytest.raises(TargetUnavailableError, match="importing torch_neuronx failed"):
        NeuronTarget().check_available()


def test_a_missing_distribution_is_named() -> None:
    assert sdk_problem({"torch-neuronx": None, "torch": "2.9.0", "neuronx-cc": "2.27"}) == (
        "torch-neuronx is not installed"
    )
