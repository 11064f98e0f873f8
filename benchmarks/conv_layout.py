"""Each network of an addon in the form it is stored against its channels-last form and against its CPU
form (what a CPU stack runs: `cpu_form`, channels-last for the VITS generator, time-major products for
the VITS flow and text encoder), alternating call by call, freed memory held as `tts_neuron.load` holds it.

    python benchmarks/conv_layout.py ADDON [ADDON ...] [--lengths 20 88 152] [--batch 1] [--threads 1]

Every form runs every network at each length (frames or tokens, random inputs) and must agree with the
stored one within 1e-3 of the output's scale; the table gives the median time of each over `--rounds`
alternating calls and its ratio to the stored form. A ratio below 1 is faster on this host; which
networks take which form is decided by these figures (docs/importing.md, "Benchmark").
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
from tts_neuron.models.protocols import CompilableNetwork, cpu_form


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
        forms = {"stored": stored, "channels_last": channels_last(stored), "cpu_form": cpu_form(stored)}
        if all(network is stored for network in forms.values()):
            continue  # no 1-D convolution in it and no CPU form
        for length in lengths:
            example = inputs(stored, length, batch)
            times: dict[str, list[float]] = {form: [] for form in forms}
            with torch.no_grad():
                reference = first(stored(*example))
                scale = float(reference.abs().max()) or 1.0
                for form, network in forms.items():
                    if float((reference - first(network(*example))).abs().max()) > 1e-3 * scale:
                        raise RuntimeError(f"{root.name} {name} at {length}: the {form} form disagrees")
                    network(*example)  # a second warm-up call
                for _ in range(rounds):
                    for form, network in forms.items():
                        started = time.perf_counter()
                        network(*example)
                        times[form].append(time.perf_counter() - started)
            base, *others = (1000 * statistics.median(times[form]) for form in forms)
            cells = " | ".join(f"{ms:.2f} ms ({ms / base:.2f})" for ms in others)
            rows.append(f"| {addon.name} | {name} | {length} | {base:.2f} ms | {cells} |")
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
    print(
        "| addon | network | length | stored form | channels-last (ratio) | CPU form (ratio) |\n"
        "|---|---|---|---|---|---|"
    )
    for root in args.addons:
        for row in compare(root, args.lengths, args.batch, args.rounds):
            print(row, flush=True)


if __name__ == "__main__":
    main()
