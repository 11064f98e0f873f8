"""The hardware test kit's helpers: which targets this host can run, what each test compiles, how a compiled
output is compared with the CPU, and the JSON record of a run's figures.

Compiles and runs go through `worker.py` in separate processes: a Neuron process reserves every core it
can see, a trace can kill its process, and a reload must not reuse anything the compile left in memory.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tts_neuron.backends import get_target
from tts_neuron.errors import TargetUnavailableError
from tts_neuron.models.vocoder import InverseSTFT

REPO = Path(__file__).resolve().parents[2]
NEURON_DEVICE = Path("/dev/neuron0")
NEURON_LS = ("neuron-ls", "/opt/aws/neuron/bin/neuron-ls")
DISTRIBUTIONS = ("torch", "torch-neuronx", "neuronx-cc", "tts-neuron")

FP32_ARGS = {"cpu": [], "cuda": [], "neuron": ["--target", "inf2", "--auto-cast", "none"]}
"""Compiler arguments of the probes: fp32 throughout, so a probe compares exactly with the CPU."""


def neuron_unavailable() -> str | None:
    """Why this host cannot run the `neuron` tests; None when it can."""
    if not NEURON_DEVICE.exists():
        return f"no {NEURON_DEVICE}: not an inf2 host"
    try:
        get_target("neuron").check_available()
    except TargetUnavailableError as err:
        return str(err)
    return None


def cuda_unavailable() -> str | None:
    """Why this host cannot run the `cuda` tests; None when it can."""
    try:
        get_target("cuda").check_available()
    except TargetUnavailableError as err:
        return str(err)
    return None


def versions() -> dict[str, str | None]:
    """Installed versions by distribution name (None where absent): what a record is only valid for."""
    found: dict[str, str | None] = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def neuron_ls() -> Any:
    """`neuron-ls --json-output`: the devices and cores the runtime sees."""
    tool = next(filter(None, map(shutil.which, NEURON_LS)), None)
    if tool is None:
        raise FileNotFoundError(f"no neuron-ls ({', '.join(NEURON_LS)}): install aws-neuronx-tools")
    result = subprocess.run([tool, "--json-output"], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout)


# --- probes: the patterns the audit names, each a tiny fp32 graph with fixed inputs -----------------------


class SplitDim1(nn.Module):
    """`split([3, 1], dim=-1)` of a 2-D tensor: the repro of pytorch/xla#8640, a known issue of
    torch-neuronx 2.9."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x.split([3, 1], dim=-1)  # x: [3, 4] -> [3, 3], [3, 1]
        return a + 0, b + 0


class TensorSplitDim1(nn.Module):
    """`torch.tensor_split` at the same place: the documented workaround."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = torch.tensor_split(x, [3], dim=1)  # x: [3, 4] -> [3, 3], [3, 1]
        return a + 0, b + 0


class LSTMCellStep(nn.Module):
    """One step of torch's own LSTMCell: its gates are chunked along dim 1 of a 2-D [B, 4H] tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(12, 16)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cell(x, (h, c))  # x: [2, 12], h, c: [2, 16]


class DepthwiseConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(32, 32, kernel_size=7, padding=3, groups=32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # x: [2, 32, 40]


class RealOnlyISTFT(nn.Module):
    """The vocoder's inverse STFT in its compiled form (a DFT basis matmul and shifted adds), at T=50."""

    def __init__(self) -> None:
        super().__init__()
        self.istft = InverseSTFT(n_fft=1024, hop_length=256, real_only=True)

    def forward(self, real: torch.Tensor, imag: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.istft(real, imag, mask)  # [1, 50, 513] x 2, [1, 50] -> [1, 12800]


PROBES: dict[str, type[nn.Module]] = {
    "split_dim1": SplitDim1,
    "tensor_split_dim1": TensorSplitDim1,
    "lstm_cell": LSTMCellStep,
    "depthwise_conv": DepthwiseConv,
    "real_only_istft": RealOnlyISTFT,
}


def probe(name: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The probe module and its inputs, the same in every process (seeded)."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    module = PROBES[name]().eval()
    if name in ("split_dim1", "tensor_split_dim1"):
        inputs: tuple[torch.Tensor, ...] = (torch.arange(12, dtype=torch.float32).reshape(3, 4),)
    elif name == "lstm_cell":
        inputs = tuple(torch.randn(2, n, generator=generator) for n in (12, 16, 16))
    elif name == "depthwise_conv":
        inputs = (torch.randn(2, 32, 40, generator=generator),)
    else:
        inputs = (*(torch.randn(1, 50, 513, generator=generator) for _ in range(2)), torch.ones(1, 50))
    return module, inputs


def rollout(
    step: Callable[..., Any], inputs: dict[str, torch.Tensor], state_size: int, n_mels: int
) -> dict[str, torch.Tensor]:
    """An attention step fed back its own frames, alignment and state from zero state, one step per
    prenet mask: memory [1, N, C], keys [1, N, A], mask [1, N] and prenet_masks [S, 1, 2, P] in; frames
    [S, r, n_mels], stop logits [S] and attention weights [S, N] out, on the CPU."""
    memory, keys, mask, masks = inputs["memory"], inputs["keys"], inputs["mask"], inputs["prenet_masks"]
    alignment = memory.new_zeros(1, 2, memory.shape[1])
    state = memory.new_zeros(1, state_size)
    last = memory.new_zeros(1, n_mels)
    frames, stops, weights = [], [], []
    with torch.inference_mode():
        for i in range(masks.shape[0]):
            out, stop, alignment, state = step(memory, keys, mask, alignment, state, last, masks[i])
            frames.append(out[0].cpu())
            stops.append(stop[0].cpu())
            weights.append(alignment[0, 0].cpu())
            last = out[:, -1]
    return {"frames": torch.stack(frames), "stop": torch.stack(stops), "weights": torch.stack(weights)}


# --- comparison with the CPU ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """How far an output is from the CPU's: largest absolute difference, relative L2 error, cosine."""

    max_abs: float
    rel_l2: float
    cosine: float
    finite: bool


def agreement(actual: torch.Tensor, expected: torch.Tensor) -> Agreement:
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {tuple(actual.shape)} against {tuple(expected.shape)}")
    a = actual.detach().double().cpu().flatten()
    e = expected.detach().double().cpu().flatten()
    finite = bool(torch.isfinite(a).all())
    diff = a - e
    e_norm, a_norm = float(e.norm()), float(a.norm())
    rel = float(diff.norm()) / e_norm if e_norm > 0 else (0.0 if float(diff.norm()) == 0 else math.inf)
    cosine = float(a @ e) / (a_norm * e_norm) if a_norm > 0 and e_norm > 0 else float(a_norm == e_norm)
    return Agreement(float(diff.abs().max()) if diff.numel() else 0.0, rel, cosine, finite)


def snr_db(reference: np.ndarray | torch.Tensor, test: np.ndarray | torch.Tensor) -> float:
    """Signal-to-noise ratio of `test` against `reference` in dB: inf when equal, -inf when the reference
    is silent and the test is not."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    out = np.asarray(test, dtype=np.float64).ravel()
    if ref.shape != out.shape:
        raise ValueError(f"lengths differ: {ref.size} against {out.size}")
    noise = out - ref
    signal, error = float(ref @ ref), float(noise @ noise)
    if error == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / error)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit mono WAV's samples as floats in [-1, 1), and its sample rate."""
    with wave.open(str(path)) as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{path}: not 16-bit mono")
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return data.astype(np.float64) / 32768, wav.getframerate()


@dataclass(frozen=True)
class Tolerance:
    """What a target must meet against the CPU: probes (fp32), networks (its default precision), audio."""

    probe_abs: float
    rel_l2: float
    cosine: float
    snr_db: float


TOLERANCE = {
    # torch.export against eager: the same kernels, float rounding only.
    "cpu": Tolerance(probe_abs=1e-5, rel_l2=1e-4, cosine=0.99999, snr_db=60.0),
    # CUDA kernels (and TF32 where torch allows it) against CPU ones.
    "cuda": Tolerance(probe_abs=1e-4, rel_l2=1e-3, cosine=0.9999, snr_db=40.0),
    # fp32 probes must be exact to rounding; networks may use bf16 matmuls (8 significant bits).
    "neuron": Tolerance(probe_abs=1e-5, rel_l2=3e-2, cosine=0.999, snr_db=30.0),
}


# --- the JSON record --------------------------------------------------------------------------------------


def record_dir() -> Path:
    """$OUT when set (the device machine's folder that comes back), else build/hardware."""
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "build" / "hardware"


def _jsonable(value: Any) -> Any:
    """Plain JSON: dataclasses as objects, non-finite floats as the strings "inf", "-inf", "nan"."""
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Record:
    """The figures of one target's run, rewritten whole after every addition so a run that is killed
    keeps what it measured."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "target": target,
            "host": platform.node(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": versions(),
            "results": {},
        }
        self.write()

    def add(self, key: str, value: Any) -> None:
        self.data["results"][key] = _jsonable(value)
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        tmp.replace(self.path)


# --- the worker, run in a fresh process ------------------------------------------------------------------


def run_worker(
    command: str, jobs: list[dict[str, Any]], timeout: float, isolate: bool, env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Answers of `worker.py COMMAND` to each job, in fresh processes: one per job when `isolate` (a
    compile that crashes, is killed or times out then costs only its own answer, {"error": ...}), else one
    for all."""
    groups = [[job] for job in jobs] if isolate else [jobs]
    answers: list[dict[str, Any]] = []
    for group in groups:
        names = ", ".join(job["name"] for job in group)
        try:
            result = subprocess.run(
                [sys.executable, "-m", "tests.hardware.worker", command],
                input=json.dumps(group),
                capture_output=True,
                text=True,
                timeout=timeout * len(group),
                cwd=REPO,
                env={**os.environ, **(env or {})},
            )
        except subprocess.TimeoutExpired:
            seconds = timeout * len(group)
            answers += [{"error": f"{command} {names}: no answer within {seconds:.0f} s"}] * len(group)
            continue
        if result.returncode != 0:
            tail = (result.stderr or result.stdout)[-2000:]
            answers += [{"error": f"{command} {names}: exit status {result.returncode}: {tail}"}] * len(group)
            continue
        answers += json.loads(result.stdout.splitlines()[-1])
    return answers
