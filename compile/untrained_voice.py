"""Writes the placeholder voice `addons/fastspeech-en`: the real architecture, symbol table and stacks
with random (seeded) weights, so the whole runtime can be tried before a trained voice exists.

    python -m compile.untrained_voice [--out addons/fastspeech-en]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from compile.addon_writer import write_addon
from compile.corpus import docstring_sentences
from compile.fastspeech_voice import STACKS, fastspeech_networks
from compile.symbols import collect_symbols


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("addons/fastspeech-en"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
