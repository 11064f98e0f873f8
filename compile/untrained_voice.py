"""Writes a placeholder voice: the real architecture, symbol table and stacks of `addons/fastspeech-en`
with random (seeded) weights, so the whole runtime can be tried before a trained voice exists.

    python -m tts_neuron_build.untrained_voice [--out build/untrained-en] [--force]

It writes to a build folder by default and refuses to overwrite an addon whose addon.json says it is
trained (the shipped voices took an hour of training each) unless given --force.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

from tts_neuron.addon import ADDON_FILE
from tts_neuron_build.addon_writer import write_addon
from tts_neuron_build.corpus import docstring_sentences
from tts_neuron_build.fastspeech_voice import STACKS, fastspeech_networks
from tts_neuron_build.symbols import collect_symbols

DEFAULT_OUT = Path("build/untrained-en")


def is_trained(addon_dir: Path) -> bool:
    """Whether the folder holds an addon that says it is trained (a malformed addon.json counts as one:
    what it holds cannot be told, so it is not overwritten without --force)."""
    path = addon_dir / ADDON_FILE
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("trained") is not False
    except (OSError, ValueError, AttributeError):
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"addon folder (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="overwrite even a trained addon")
    args = parser.parse_args(argv)
    if is_trained(args.out) and not args.force:
        print(
            f'{args.out / ADDON_FILE} does not say "trained": false; not overwriting that addon with '
            "random weights (use --force)",
            file=sys.stderr,
        )
        return 2
    torch.manual_seed(args.seed)
    symbols = collect_symbols(itertools.islice(docstring_sentences(), 3000))
    write_addon(
        args.out,
        name="fastspeech-en",
        description="FastSpeech-style English voice. UNTRAINED: random weights, it makes noise, not speech.",
        trained=False,
        symbols=symbols,
        networks=fastspeech_networks(len(symbols)),
        stacks=STACKS,
        default_stack="cpu",
    )
    print(f"wrote {args.out} ({len(symbols)} symbols)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
