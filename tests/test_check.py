"""`tts-neuron check`: networks Neuron would reject are flagged (and the command fails); the shipped voices
pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tests.conftest import REPO, edit_addon_json
from tts_neuron.backends.manifest import sha256_file
from tts_neuron.check import check_addon, classify, graph_operators
from tts_neuron.cli import main

SHIPPED = [REPO / "addons" / "fastspeech-en", REPO / "addons" / "tacotron-en"]


class _Frames(nn.Module):
    """A tiny frames-in network; subclasses do one thing Neuron cannot."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.project = nn.Linear(channels, channels)

    def example_inputs(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, length, self.project.in_features), torch.ones(1, length)


class FFTNetwork(_Frames):
    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # frames: [B, T, C] -> magnitudes [B, T // 2 + 1, C]
        return torch.fft.rfft(self.project(frames), dim=1).abs()


class NonzeroNetwork(_Frames):
    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # frames: [B, T, C], mask: [B, T] -> frames, indices of real positions [n, 2]
        return self.project(frames) * mask.unsqueeze(-1), torch.nonzero(mask)


class DoubleNetwork(_Frames):
    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.project(frames).double().sum(-1)  # [B, T] float64


class BranchingNetwork(_Frames):
    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if frames.sum() > 0:  # control flow on the data: torch.export refuses it
            return frames
        return -frames


BAD = {"fft": FFTNetwork, "nonzero": NonzeroNetwork, "double": DoubleNetwork, "branching": BranchingNetwork}


def add_network(root: Path, name: str, cls: type[nn.Module], buckets: list[int]) -> None:
    """Declare one more network in an addon, as an exporter would write it."""
    path = root / "networks" / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in cls().state_dict().items()}, str(path))
    entry = {
        "architecture": f"tests.test_check:{cls.__name__}",
        "role": "postnet",
        "inputs": ["frames", "frame_mask"],
        "outputs": ["mel"],
        "config": {},
        "parameters": f"networks/{name}.safetensors",
        "sha256": sha256_file(path),
        "buckets": buckets,
    }
    edit_addon_json(root, lambda config: config["networks"].update({name: entry}))


@pytest.fixture
def bad_addon(addon_copy: Path) -> Path:
    for name, cls in BAD.items():
        add_network(addon_copy, name, cls, [8, 16])
    return addon_copy


def test_bad_networks_are_flagged_at_every_bucket_and_good_ones_are_not(bad_addon: Path) -> None:
    report = check_addon(bad_addon, progress=False)
    assert not report.ok
    by_shape = {(c.network, c.bucket): c for c in report.buckets}
    for bucket in (8, 16):
        fft = by_shape["fft", bucket]
        rejected = {o.name: o.reason for o in fft.operators if o.status == "rejected"}
        assert "FFT" in rejected["aten::_fft_r2c"]  # fft_rfft in core ATen
        assert "complex" in rejected["aten::_fft_r2c"]
        nonzero = {o.name: o for o in by_shape["nonzero", bucket].operators}
        assert nonzero["aten::nonzero"].status == "rejected"
        assert "depends on the data" in nonzero["aten::nonzero"].reason
        double = {o.name: o for o in by_shape["double", bucket].operators if o.status == "rejected"}
        assert any("float64" in o.reason for o in double.values())
        branching = by_shape["branching", bucket]
        assert branching.error is not None and branching.error.startswith("torch.export failed")
        assert not any(by_shape[name, bucket].ok for name in BAD)
    for check in report.buckets:
        if check.network not in BAD:  # the tiny addon's own networks
            assert check.ok and check.error is None and check.operators


def test_check_command_exits_1_and_writes_json(
    bad_addon: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "check.json"
    assert main(["check", "--addon", str(bad_addon), "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "aten::_fft_r2c" in printed and "rejected" in printed and "FAIL:" in printed
    data = json.loads(out.read_text())
    assert data["ok"] is False and data["target"] == "neuron"
    failed = {(b["network"], b["bucket"]) for b in data["buckets"] if not b["ok"]}
    assert failed == {(name, bucket) for name in BAD for bucket in (8, 16)}


def test_check_command_passes_a_good_addon(tiny_addon_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--addon", str(tiny_addon_dir)]) == 0
    assert "OK: no documented Neuron rejection" in capsys.readouterr().out


def test_check_command_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--addon", str(tmp_path / "missing")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_operator_names_are_classified_by_the_lowering_table() -> None:
    assert classify("aten::fft_irfft")[0] == "rejected"
    assert classify("aten::stft")[0] == "rejected"
    assert classify("aten::unique_consecutive")[0] == "rejected"
    assert classify("aten::bernoulli")[0] == "rejected"  # random
    lowered_as = "lowered by torch-xla as convolution_overrideable [xla]"
    assert classify("aten::convolution") == ("lowered", lowered_as)
    assert classify("aten::view") == ("lowered", "lowered by torch-xla [xla]")
    assert classify("aten::permute")[0] == "lowered"
    assert classify("aten::unfold")[0] == "fallback"  # not in torch-xla's table, no composite kernel
    assert classify("aten::scalar_tensor")[0] == "composite"


class FallbackOnWeights(_Frames):
    """An operator torch-xla does not lower (unfold), once on the input and once on a weight."""

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        on_input = frames.unfold(1, 2, 2).sum(-1)  # [B, T // 2, C]
        on_weight = self.project.weight.unfold(0, 2, 2).sum(-1)  # [C // 2, C]
        return on_input @ on_weight.t()  # [B, T // 2, C // 2]


def test_no_lowering_is_a_fallback_and_on_weights_is_rejected() -> None:
    network = FallbackOnWeights()
    program = torch.export.export(network, network.example_inputs(6)).run_decompositions()
    unfold = [o for o in graph_operators(program) if o.name == "aten::unfold"]
    assert len(unfold) == 1 and unfold[0].count == 2  # one row per operator: the worse use decides
    assert unfold[0].status == "rejected" and "1265" in unfold[0].reason
    on_input = FallbackOnInput()
    program = torch.export.export(on_input, on_input.example_inputs(6)).run_decompositions()
    assert {o.name: o.status for o in graph_operators(program)}["aten::unfold"] == "fallback"


class FallbackOnInput(_Frames):
    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return frames.unfold(1, 2, 2).sum(-1)  # [B, T // 2, C]


@pytest.mark.parametrize("addon", SHIPPED, ids=lambda p: p.name)
def test_shipped_voices_pass_at_every_bucket(addon: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """About 2 s a voice on 2 cores: every network at every bucket, as the command runs it."""
    assert main(["check", "--addon", str(addon)]) == 0
    printed = capsys.readouterr().out
    assert "OK: no documented Neuron rejection" in printed and "rejected" not in printed
    assert "fallback" not in printed  # every operator of the shipped voices has a torch-xla lowering or
    # (scalar_tensor, from masked_fill) a composite kernel
    networks = json.loads((addon / "addon.json").read_text())["networks"]
    assert all(
        f"{name} (buckets {', '.join(map(str, n['buckets']))})" in printed for name, n in networks.items()
    )
