"""What every training recipe shares: length-bucketed batches of teacher data, the learning-rate schedule,
the seeded training loop over named losses, and the command line that writes the trained addon.

A recipe supplies its networks, a module wiring them for training, and a function from a batch to its
named losses; everything else (order of batches, evaluation, history, addon, training.json, the loss
plot) is the same for every voice.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from tts_neuron.addon import load_addon, read_parameters
from tts_neuron.audio import AudioConfig
from tts_neuron.errors import AddonError
from tts_neuron_build.addon_writer import NetworkEntry, write_addon
from tts_neuron_build.teacher import TeacherSplit
from tts_neuron_build.vocoder_voice import VOCODER_NAME


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, N] int64, 0 = padding
    token_mask: torch.Tensor  # [B, N]
    durations: torch.Tensor  # [B, N] frames
    mel: torch.Tensor  # [B, T, n_mels]
    frame_mask: torch.Tensor  # [B, T]


def make_batches(split: TeacherSplit, max_frames: int, rng: random.Random) -> list[list[int]]:
    """Utterances of similar length together, at most `max_frames` padded frames a batch, in random order."""
    lengths = (split.frame_offsets[1:] - split.frame_offsets[:-1]).tolist()
    order = sorted(range(len(split)), key=lambda i: (lengths[i], rng.random()))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and lengths[i] * (len(current) + 1) > max_frames:
            batches.append(current)
            current = []
        current.append(i)
    batches.append(current)
    rng.shuffle(batches)
    return batches


def collate(split: TeacherSplit, indices: list[int]) -> Batch:
    items = [split.item(i) for i in indices]
    n, t = max(len(tok) for tok, _, _ in items), max(len(mel) for _, _, mel in items)
    batch = Batch(
        tokens=torch.zeros(len(items), n, dtype=torch.int64),
        token_mask=torch.zeros(len(items), n),
        durations=torch.zeros(len(items), n, dtype=torch.int64),
        mel=torch.zeros(len(items), t, items[0][2].shape[1]),
        frame_mask=torch.zeros(len(items), t),
    )
    for b, (tokens, durations, mel) in enumerate(items):
        batch.tokens[b, : len(tokens)] = tokens
        batch.token_mask[b, : len(tokens)] = 1
        batch.durations[b, : len(tokens)] = durations
        batch.mel[b, : len(mel)] = mel
        batch.frame_mask[b, : len(mel)] = 1
    return batch


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainConfig:
    """Settings every recipe has; a recipe subclasses it to change the defaults or add its own."""

    epochs: int = 12
    max_frames: int = 6000
    """Padded frames per batch."""
    lr: float = 2e-3
    warmup: int = 400
    """Steps of linear warm-up (at most a tenth of the run)."""
    seed: int = 0
    limit: int = 0
    """If set, at most this many steps per epoch (smoke runs)."""
    sizes: dict[str, Any] = field(default_factory=dict)
    """Overrides of the recipe's network sizes."""


Losses = Callable[[Any, Batch], dict[str, torch.Tensor]]
"""A batch's named losses; training minimises their sum."""


@torch.no_grad()
def evaluate(model: nn.Module, losses: Losses, split: TeacherSplit, max_frames: int) -> dict[str, float]:
    model.eval()
    totals: dict[str, float] = {}
    batches = make_batches(split, max_frames, random.Random(0))
    for indices in batches:
        for key, value in losses(model, collate(split, indices)).items():
            totals[key] = totals.get(key, 0.0) + value.item() / len(batches)
    model.train()
    return totals


def fit(
    model: nn.Module,
    losses: Losses,
    cfg: TrainConfig,
    train_split: TeacherSplit,
    held_out: TeacherSplit,
    rng: random.Random,
) -> list[dict[str, float]]:
    """AdamW, warm-up then cosine decay, clipped gradients; the history of every step's losses, with
    the held-out losses (`eval_<name>`) on the last step of each epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=1e-6)
    steps_per_epoch = len(make_batches(train_split, cfg.max_frames, random.Random(0)))
    if cfg.limit:
        steps_per_epoch = min(steps_per_epoch, cfg.limit)
    total = steps_per_epoch * cfg.epochs
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params:,} parameters, {len(train_split)} utterances, {total} steps")

    history: list[dict[str, float]] = []
    step = 0
    progress = tqdm(total=total, desc="training", unit="step", mininterval=10)
    for epoch in range(cfg.epochs):
        for indices in make_batches(train_split, cfg.max_frames, rng)[:steps_per_epoch]:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, cfg.lr, warmup=min(cfg.warmup, total // 10 + 1))
            parts = losses(model, collate(train_split, indices))
            optimizer.zero_grad(set_to_none=True)
            torch.stack(list(parts.values())).sum().backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            history.append({"step": step, **{key: value.item() for key, value in parts.items()}})
            progress.set_postfix({key: f"{value.item():.3f}" for key, value in parts.items()}, refresh=False)
            progress.update()
        held = evaluate(model, losses, held_out, cfg.max_frames)
        history[-1].update({f"eval_{key}": value for key, value in held.items()})
        progress.write(f"epoch {epoch}: held out " + ", ".join(f"{k} {v:.4f}" for k, v in held.items()))
    progress.close()
    model.eval()
    return history


def plot_losses(history: list[dict[str, float]], path: Path, title: str, curves: dict[str, str]) -> None:
    """Training losses named in `curves` (key -> label), and the first one held out, on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in history]
    for key, label in curves.items():
        ax.plot(steps, [h[key] for h in history], label=f"{label} (train)")
    first, label = next(iter(curves.items()))
    evals = [h for h in history if f"eval_{first}" in h]
    ax.plot(
        [h["step"] for h in evals], [h[f"eval_{first}"] for h in evals], "o-", label=f"{label} (held out)"
    )
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclass
class Recipe:
    """One voice's training: its addon name, defaults and the function that trains it."""

    name: str
    describe: str
    """The addon's description; {utterances}, {epochs}, {minutes} and {threads} are filled in."""
    config: type[TrainConfig]
    train: Callable[..., tuple[dict[str, NetworkEntry], list[dict[str, float]]]]
    """(config, train split, held-out split, n_symbols, n_mels) -> (networks, history)"""
    stacks: dict[str, list[dict[str, Any]]]
    curves: dict[str, str]
    """Losses to plot (key -> label), the first also held out."""


def teacher_meta(data: Path) -> dict[str, Any]:
    """The teacher data's symbols and audio settings; a clear exit when there is no teacher data."""
    if not (data / "meta.json").is_file():
        raise SystemExit(f"{data}: no teacher data; run `make teacher` first")
    meta: dict[str, Any] = json.loads((data / "meta.json").read_text())
    return meta


def keep_trained_vocoder(out: Path, entries: dict[str, NetworkEntry]) -> None:
    """Carry the trained vocoder of the addon being replaced over to the new one (it is trained apart,
    by `make vocoder`); without one the new addon keeps its untrained vocoder, and says so."""
    try:
        previous = load_addon(out)
        state = read_parameters(previous.networks[VOCODER_NAME].parameters)
        entries[VOCODER_NAME].network.load_state_dict(state, strict=True)
    except (AddonError, KeyError, RuntimeError) as err:
        print(f"{out}: no trained vocoder to keep ({type(err).__name__}); run `make vocoder` after this")


def main(recipe: Recipe, doc: str) -> None:
    """The command line of a recipe: train on teacher data, write the addon, its training.json and plot."""
    defaults = recipe.config()
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/teacher"))
    parser.add_argument("--out", type=Path, default=Path("addons") / recipe.name)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--max-frames", type=int, default=defaults.max_frames, help="padded frames per batch")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="at most N steps per epoch (smoke runs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    meta = teacher_meta(args.data)
    symbols, audio = meta["symbols"], AudioConfig.from_dict(meta["audio"])
    train_split = TeacherSplit.load(args.data / "train.safetensors")
    held_out = TeacherSplit.load(args.data / "eval.safetensors")
    cfg = recipe.config(
        epochs=args.epochs, max_frames=args.max_frames, lr=args.lr, seed=args.seed, limit=args.limit
    )

    started = time.perf_counter()
    entries, history = recipe.train(cfg, train_split, held_out, len(symbols), audio.n_mels)
    minutes = (time.perf_counter() - started) / 60
    keep_trained_vocoder(args.out, entries)
    description = recipe.describe.format(
        utterances=len(train_split), epochs=cfg.epochs, minutes=round(minutes), threads=args.threads
    )
    write_addon(
        args.out,
        name=recipe.name,
        description=description,
        trained=True,
        symbols=symbols,
        networks=entries,
        stacks=recipe.stacks,
        default_stack="cpu",
        audio=audio,
    )
    n_params = sum(p.numel() for entry in entries.values() for p in entry.network.parameters())
    record = {"parameters": n_params, "minutes": minutes, "threads": args.threads, "config": asdict(cfg)}
    kept = [h for i, h in enumerate(history) if i % 25 == 0 or any(k.startswith("eval_") for k in h)]
    (args.out / "training.json").write_text(json.dumps({**record, "history": kept}, indent=1))
    plot_losses(history, args.out / "training-loss.png", f"{recipe.name} training", recipe.curves)
    print(f"wrote {args.out} after {minutes:.1f} minutes")
