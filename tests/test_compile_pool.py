"""compile/pool.py: jobs in spawned processes, where one that raises or kills its worker fails alone and
by name; and the compiler on top of it (the CPU target runs the same pool)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from tts_neuron.models.fastspeech import TextEncoder
from tts_neuron_build.pool import run_jobs, worker_count

_SETUP_PIDS: list[int] = []


def note_setup() -> None:
    _SETUP_PIDS.append(os.getpid())


def square_or_fail(x: int) -> tuple[int, int]:
    """x * x and the worker's pid; 3 exits the worker, 4 raises, 5 is killed by SIGKILL."""
    if x == 3:
        os._exit(7)
    if x == 4:
        raise ValueError("four is refused\nsecond line")
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    assert [os.getpid()] == _SETUP_PIDS, "setup ran once, in this worker"
    return x * x, os.getpid()


def test_failed_and_killed_jobs_fail_alone_and_by_name() -> None:
    jobs = list(range(9))
    outcomes = run_jobs(jobs, square_or_fail, workers=2, setup=note_setup, progress=False)
    assert [o.job for o in outcomes] == jobs
    assert outcomes[3].error == "its worker exited with code 7" and outcomes[3].result is None
    assert outcomes[4].error == "ValueError: four is refused"
    assert outcomes[5].error == "its worker was killed by SIGKILL"
    done = {o.job: o.result for o in outcomes if o.error is None}
    assert sorted(done) == [0, 1, 2, 6, 7, 8]
    assert all(result is not None and result[0] == job * job for job, result in done.items())
    assert os.getpid() not in {result[1] for result in done.values() if result}  # not in this process


def test_worker_count_is_capped_by_jobs_and_memory() -> None:
    assert worker_count(4, 2, 1) == 2
    assert worker_count(4, 10, 1) == 4
    assert worker_count(4, 10, 1 << 60) == 1  # no host holds one such job: still one worker
    assert worker_count(None, 1000, 1) >= 1


def test_a_failed_compile_is_named_and_keeps_its_workdir(addon_copy: Path) -> None:
    """A network whose compile fails: the others are saved and recorded, the message names the failure
    and its kept compiler folder; a second run compiles only what is missing."""
    from tests.conftest import edit_addon_json
    from tts_neuron.backends.manifest import Manifest
    from tts_neuron_build.compiler import CompileError, compile_addon

    victim = "text_encoder"
    # a network that loads but fails to compile, in the worker, at each of its jobs
    edit_addon_json(
        addon_copy,
        lambda c: c["networks"][victim].update({"architecture": "tests.test_compile_pool:Unexportable"}),
    )
    with pytest.raises(CompileError, match=rf"{victim} batch 1 bucket \d+: .*kept in (\S+)\)") as failed:
        compile_addon(addon_copy, "cpu", progress=False, jobs=2)
    kept = Path(str(failed.value).split("kept in ")[1].split(")")[0])
    assert kept.is_dir()
    manifest = Manifest.read(addon_copy / "compiled" / "cpu" / "manifest.json")
    others = [n for n in manifest.networks if n != victim]
    assert others and all(manifest.networks[n].artifacts for n in others)
    assert not manifest.networks[victim].artifacts


class Unexportable(TextEncoder):
    """The tiny voice's text encoder, with control flow on the data: it loads, but torch.export refuses it."""

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        encodings = super().forward(tokens, token_mask)
        return encodings if tokens.sum() > 0 else -encodings


def test_compiler_args_per_network_are_validated_used_and_recorded(addon_copy: Path) -> None:
    from tests.conftest import edit_addon_json
    from tts_neuron.addon import load_addon
    from tts_neuron.backends import load_executor
    from tts_neuron.backends.manifest import CompiledArtifactError, Manifest
    from tts_neuron.errors import AddonError
    from tts_neuron_build.compiler import compile_addon

    config = json.loads((addon_copy / "addon.json").read_text())
    name = next(name for name, net in config["networks"].items() if net.get("buckets"))
    for bad, says in (({"tpu": []}, "unknown target 'tpu'"), ({"cpu": ["a b"]}, "letters, digits")):
        edit_addon_json(addon_copy, lambda c, bad=bad: c["networks"][name].update({"compiler_args": bad}))
        with pytest.raises(AddonError, match=says):
            load_addon(addon_copy)
    edit_addon_json(addon_copy, lambda c: c["networks"][name].update({"compiler_args": {"cpu": ["--x"]}}))
    compile_addon(addon_copy, "cpu", progress=False, jobs=1)
    path = addon_copy / "compiled" / "cpu" / "manifest.json"
    manifest = Manifest.read(path)
    assert manifest.networks[name].compiler_args == ["--x"]
    assert all(entry.compiler_args == [] for n, entry in manifest.networks.items() if n != name)
    load_executor(load_addon(addon_copy), name, "cpu", torch.device("cpu"))  # as compiled: loads
    edit_addon_json(addon_copy, lambda c: c["networks"][name].update({"compiler_args": {"cpu": ["--y"]}}))
    with pytest.raises(CompiledArtifactError, match=r"compiled with arguments \['--x'\].*asks for \['--y'\]"):
        load_executor(load_addon(addon_copy), name, "cpu", torch.device("cpu"))
    edit_addon_json(addon_copy, lambda c: c["networks"][name].update({"compiler_args": {"cpu": ["--x"]}}))
    # a compiler other than this host's makes the artifacts stale at load
    raw = json.loads(path.read_text())
    raw["compiler"] = "torch.export 0.0"
    path.write_text(json.dumps(raw))
    with pytest.raises(CompiledArtifactError, match="stale: it was compiled with torch.export 0.0"):
        load_executor(load_addon(addon_copy), name, "cpu", torch.device("cpu"))


@pytest.mark.parametrize("voice", ["fastspeech-en", "tacotron-en"])
def test_shipped_vocoder_and_attention_step_compile_in_fp32_on_neuron(voice: str) -> None:
    from tests.conftest import REPO
    from tts_neuron.addon import load_addon
    from tts_neuron.backends.neuron import compiler_args, merge_args

    addon = load_addon(REPO / "addons" / voice)
    fp32 = {n for n, spec in addon.networks.items() if spec.architecture in ("MelVocoder", "AttentionStep")}
    for name, spec in addon.networks.items():
        args = merge_args(compiler_args(), spec.compiler_args.get("neuron", []))
        auto_cast = args[args.index("--auto-cast") + 1]
        assert args.count("--auto-cast") == 1 and auto_cast == ("none" if name in fp32 else "matmult")
