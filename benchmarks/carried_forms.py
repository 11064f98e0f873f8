"""Windowed networks fed each frame once (their carried forms, as shipped) against the same windows with
their context computed again at every call, alternating sentence by sentence in one process.

    python benchmarks/carried_forms.py [ADDON ...] [--piper] [--schedule engine|direct] [--rounds 3]

Each sentence of benchmarks/run.py's paragraph is spoken by each addon (both shipped voices by default;
`--piper` adds the perturbed medium Piper voice of benchmarks/piper_compare.py, imported, whose flow and
HiFi-GAN have carried forms) in both forms, the order flipping each sentence, as sentence i % 3 of a call
(texts of three sentences, as benchmarks/serve_load.py deals them); a runner times every network call and
counts the frames each windowed network is given (its halo, and the masked frames that finish a carried
utterance, included). `--schedule engine` keeps small first windows in every sentence, as the server's
engine does (`Runner.paces`); `direct` starts later sentences at full windows, as `tts_neuron.load` does.
Both forms must give the same audio within 1e-4. Prints per network the frames given per frame of audio
and the milliseconds per second of audio (medians of the rounds), and the carried form's ratio
(docs/architecture.md, "How a chunk flows").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from bench_measure import cpu_model
from run import PARAGRAPH
from window_growth import piper_fixture

import tts_neuron
from tts_neuron.blocks.context import BuildContext
from tts_neuron.models.protocols import WindowedNetwork
from tts_neuron.runners import DirectRunner, NetworkHandle
from tts_neuron.voice import Voice

ROOT = Path(__file__).resolve().parent.parent
FORMS = ("windowed", "carried")


class CountingRunner(DirectRunner):
    """Runs each call at once, adding its seconds and its input frames to the network's totals."""

    def __init__(self, engine_schedule: bool) -> None:
        self.engine_schedule = engine_schedule
        self.seconds: dict[str, float] = defaultdict(float)
        self.frames: dict[str, int] = defaultdict(int)

    def paces(self) -> bool:
        return self.engine_schedule

    def run(self, handle: NetworkHandle, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        started = time.perf_counter()
        outputs = super().run(handle, inputs)
        self.seconds[handle.name] += time.perf_counter() - started
        self.frames[handle.name] += inputs[0].shape[1]
        return outputs


def load(root: Path, form: str, runner: CountingRunner, threads: int) -> Voice:
    """The voice with its windowed networks in `form`: "windowed" builds the blocks without carried forms."""
    carried = BuildContext.carried
    if form == "windowed":
        BuildContext.carried = lambda self, plain: None  # type: ignore[method-assign]
    try:
        return tts_neuron.load(root, runner=runner, threads=threads)
    finally:
        BuildContext.carried = carried  # type: ignore[method-assign]


def compare(
    root: Path, schedule: str, rounds: int, threads: int, lines: int = len(PARAGRAPH)
) -> dict[str, dict[str, list[float]]]:
    """Per form, per windowed network: its ms per audio second in each round, and (under "frames/NAME")
    the frames it was given per frame of audio; over the paragraph's first `lines` sentences."""
    runners = {form: CountingRunner(schedule == "engine") for form in FORMS}
    voices = {form: load(root, form, runners[form], threads) for form in FORMS}
    windowed = [
        name
        for name in voices["carried"].addon.networks
        if isinstance(voices["carried"].addon.network(name), WindowedNetwork)
    ]
    call = voices["carried"].call_settings({"seed": 0})
    spoken = [
        (sentence, call.sentence(i % 3))
        for i, line in enumerate(PARAGRAPH[:lines])
        for sentence in voices["carried"].frontend.sentences(line)
    ]

    def speak(form: str, index: int) -> np.ndarray:
        sentence, settings = spoken[index]
        return torch.cat([c.data for c in voices[form].sentence_chunks(sentence, settings=settings)]).numpy()

    for form in FORMS:  # warm-up
        speak(form, 0)
    results: dict[str, dict[str, list[float]]] = {form: {} for form in FORMS}
    for round_ in range(rounds):
        samples = Counter[str]()
        for runner in runners.values():
            runner.seconds.clear()
            runner.frames.clear()
        for index in range(len(spoken)):
            audio = {}
            for form in FORMS if (index + round_) % 2 else FORMS[::-1]:
                audio[form] = speak(form, index)
                samples[form] += len(audio[form])
            if audio["windowed"].shape != audio["carried"].shape or not np.allclose(
                audio["windowed"], audio["carried"], atol=1e-4
            ):
                raise RuntimeError(f"{root.name}: the forms differ on sentence {index}")
        for form, runner in runners.items():
            seconds = samples[form] / voices[form].sample_rate
            frames = samples[form] / voices[form].addon.audio.hop_length
            for name in windowed:
                results[form].setdefault(name, []).append(1000 * runner.seconds[name] / seconds)
                results[form].setdefault(f"frames/{name}", []).append(runner.frames[name] / frames)
    return results


def report(root: Path, results: dict[str, dict[str, list[float]]]) -> list[str]:
    rows = []
    for name in results["carried"]:
        if name.startswith("frames/"):
            continue
        frames = {form: statistics.median(results[form][f"frames/{name}"]) for form in FORMS}
        ms = {form: statistics.median(results[form][name]) for form in FORMS}
        rows.append(
            f"| {root.name} | {name} | {frames['windowed']:.2f} / {frames['carried']:.2f} | "
            f"{ms['windowed']:.2f} / {ms['carried']:.2f} | {ms['carried'] / ms['windowed']:.3f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("addons", nargs="*", type=Path)
    parser.add_argument("--piper", action="store_true", help="add the perturbed medium Piper voice")
    parser.add_argument("--schedule", choices=("engine", "direct"), default="engine")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    addons = args.addons or [ROOT / "addons" / "fastspeech-en", ROOT / "addons" / "tacotron-en"]
    print(
        f"{cpu_model()}, torch {torch.__version__}, {args.threads} thread(s), {args.schedule} schedule, "
        f"{args.rounds} rounds of {len(PARAGRAPH)} sentences"
    )
    print(
        "\n| addon | network | frames given per frame (windowed / carried) | ms per audio second "
        "(windowed / carried) | ratio |\n|---|---|---|---|---|"
    )
    with tempfile.TemporaryDirectory() as folder:
        for root in [*addons, *([piper_fixture(Path(folder))] if args.piper else [])]:
            for row in report(root, compare(root, args.schedule, args.rounds, args.threads)):
                print(row, flush=True)


if __name__ == "__main__":
    main()
