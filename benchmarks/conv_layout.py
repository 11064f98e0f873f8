"""Each network of an addon in the form it is stored against its channels-last form (what `cpu_form` gives
the VITS generator), alternating call by call, freed memory held as `tts_neuron.load` holds it.

    python benchmarks/conv_layout.py ADDON [ADDON ...] [--lengths 20 88 152] [--batch 1] [--threads 1]

Both forms run every network at each length (frames or tokens, random inputs) and must agree within
1e-3 of the output's scale; the table gives the median time of each over `--rounds` alternating calls
and their ratio. A ratio below 1 says channels-last is faster on this host; which networks take the
form is decided by these figures (docs/importing.md, "Benchmark").
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from bench_measure import cpu_model

from tts_neuron.addon import load_addon
from tts_neuron.allocator import hold_freed_memory
from tts_neuron.models import channels_last
from tts_neuron.models.protocols import CompilableNetwork


def inputs(network: CompilableNetwork, length: int, batch: int) -> tuple[torch.Tensor, ...]:
    """The network's example inputs at `length`, features random, ids small, masks all ones."""
    out = []
    for example in network.example_inputs(length):
        if example.is_floating_point() and example.dim() > 2:
            example = torch.randn_like(example)
        elif not example.is_floating_point() and example.dim() == 2:
            example = torch.randint(1, 20, example.shape, dtype=example.dtype)
        out.append(example.expand(batch, *example.shape[1:]).contiguous())
    return tuple(out)


def first(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return outputs[0] if isinstance(outputs, tuple) else outputs


def compare(root: Path, lengths: list[int], batch: int, rounds: int) -> list[str]:
    addon, rows = load_addon(root), []
    for name in addon.networks:
        stored = addon.network(name)
        if not isinstance(stored, CompilableNetwork):
            continue
        fast = channels_last(stored)
        if fast is stored:
            continue  # no 1-D convolution in it
        for length in lengths:
            example = inputs(stored, length, batch)
            times: dict[str, list[float]] = {"stored": [], "channels_last": []}
            with torch.no_grad():
                reference, ours = first(stored(*example)), first(fast(*example))
                scale = float(reference.abs().max()) or 1.0
                if float((reference - ours).abs().max()) > 1e-3 * scale:
                    raise RuntimeError(f"{root.name} {name} at {length}: the forms disagree")
                for _ in range(2):
                    stored(*example), fast(*example)
                for _ in range(rounds):
                    for form, network in (("stored", stored), ("channels_last", fast)):
                        started = time.perf_counter()
                        network(*example)
                        times[form].append(time.perf_counter() - started)
            a, b = (1000 * statistics.median(times[k]) for k in ("stored", "channels_last"))
            rows.append(f"| {addon.name} | {name} | {length} | {a:.2f} ms | {b:.2f} ms | {b / a:.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("addons", nargs="+", type=Path)
    parser.add_argument("--lengths", nargs="+", type=int, default=[20, 88, 152])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hold_freed_memory()
    print(
        f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}, "
        f"{args.threads} thread(s), batch {args.batch}, {args.rounds} alternating rounds\n"
    )
    print("| addon | network | length | stored form | channels-last | ratio |\n|---|---|---|---|---|---|")
    for root in args.addons:
        for row in compare(root, args.lengths, args.batch, args.rounds):
            print(row, flush=True)


if __name__ == "__main__":
    main()
