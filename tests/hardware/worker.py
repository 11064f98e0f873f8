"""One compile or one run of the hardware kit, in a fresh process: `python -m tests.hardware.worker
compile|run|rollout` reads a JSON list of jobs on stdin and prints a JSON list of answers as its last line;
a job that raises answers {"error": ...} and the others still run.

- compile: a probe through the target's own `compile`, or one network of an addon at (batch, bucket)
  through the compiler's own job, as `tts-neuron compile` runs it; answers seconds and peak host memory.
- run: load an artifact through the target's own `load`, call it on saved inputs, save its outputs, and
  call it once more at a shape it was not compiled for (twice the length), which must raise.
- rollout: an attention step, fed back its own frames, alignment and state for N steps.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tests.hardware.kit import probe, rollout
from tts_neuron.addon import load_addon
from tts_neuron.backends import get_target
from tts_neuron.backends.neuron import merge_args
from tts_neuron_build.compiler import Job, compile_job


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def compile_one(job: dict[str, Any]) -> dict[str, Any]:
    """A probe through the target's own `compile` with the job's arguments, or a network through the
    compiler's own job (its compiled form, its example inputs, the addon's arguments for that network)."""
    target = get_target(job["target"])
    workdir = Path(tempfile.mkdtemp(prefix=f"tts-neuron-kit-{job['name']}-"))
    path = Path(job["path"])
    try:
        if job["kind"] == "probe":
            module, inputs = probe(job["probe"])
            args = list(job["args"])
            started = time.perf_counter()
            target.compile(module, inputs, path, args, workdir)
            seconds = time.perf_counter() - started
        else:
            spec = load_addon(job["addon"]).networks[job["network"]]
            args = merge_args(target.default_compiler_args(), spec.compiler_args.get(job["target"], []))
            network_job = Job(job["addon"], job["target"], job["network"], job["batch"], job["bucket"],
                              str(path), tuple(args), str(workdir))  # fmt: skip
            seconds = compile_job(network_job).compile_seconds
    except Exception as err:
        raise RuntimeError(f"{err} (compiler files kept in {workdir})") from err
    shutil.rmtree(workdir, ignore_errors=True)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "args": args}


def outputs_of(result: Any) -> list[torch.Tensor]:
    return [t.cpu() for t in (result if isinstance(result, tuple | list) else (result,))]


def device_of(target: str) -> torch.device:
    return torch.device("cuda" if target == "cuda" else "cpu")


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    target, device = get_target(job["target"]), device_of(job["target"])
    if job.get("fp32") and device.type == "cuda":  # a probe compares in fp32: no TF32 matmuls or convs
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    saved = load_file(job["inputs"])
    inputs = tuple(saved[str(i)].to(device) for i in range(len(saved)))
    started = time.perf_counter()
    artifact = target.load(Path(job["path"]), device)
    loaded = time.perf_counter()
    with torch.inference_mode():
        outputs = outputs_of(artifact(*inputs))
    called = time.perf_counter()
    save_file({str(i): t.contiguous() for i, t in enumerate(outputs)}, job["outputs"])
    wrong = (inputs[0].repeat_interleave(2, dim=1), *inputs[1:])  # twice the length, the rest as compiled
    try:
        with torch.inference_mode():
            artifact(*wrong)
        refused = None
    except Exception as err:  # noqa: BLE001 - any error is a refusal; what matters is that it is not silent
        refused = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
    answer = {
        "load_seconds": loaded - started,
        "first_call_seconds": called - loaded,
        "peak_rss_mb": peak_rss_mb(),
        "refused": refused,
    }
    if device.type == "cuda":
        answer["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return answer


def rollout_job(job: dict[str, Any]) -> dict[str, Any]:
    """The kit's rollout of a compiled attention step; saves its frames, stop logits and weights."""
    target, device = get_target(job["target"]), device_of(job["target"])
    inputs = {k: v.to(device) for k, v in load_file(job["inputs"]).items()}
    step = target.load(Path(job["path"]), device)
    started = time.perf_counter()
    outputs = rollout(step, inputs, job["state_size"], job["n_mels"])
    seconds = time.perf_counter() - started
    save_file(outputs, job["outputs"])
    return {"seconds": seconds, "steps_run": len(outputs["frames"]), "peak_rss_mb": peak_rss_mb()}


COMMANDS = {"compile": compile_one, "run": run_job, "rollout": rollout_job}


def answer(command: str, job: dict[str, Any]) -> dict[str, Any]:
    try:
        return COMMANDS[command](job)
    except Exception as err:  # noqa: BLE001 - reported by name, the other jobs go on
        return {"error": f"{type(err).__name__}: {err}"[:2000]}


def main() -> None:
    command = sys.argv[1] if len(sys.argv) == 2 else ""
    if command not in COMMANDS:
        sys.exit(f"usage: python -m tests.hardware.worker {'|'.join(COMMANDS)} < jobs.json")
    jobs = json.loads(sys.stdin.read())
    print(json.dumps([answer(command, job) for job in jobs]))


if __name__ == "__main__":
    main()
