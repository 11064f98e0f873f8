"""Trains the FastSpeech-style voice on espeak-ng teacher data and writes it as an addon.

    python -m compile.train_fastspeech --data data/teacher --out addons/fastspeech-en     (or: make voice)

Seeded and deterministic on a given machine; sized to finish in about 40 minutes on 2 CPU cores. The
decoder learns from the teacher's own durations (the upsampler is given the true frame counts), and the
duration predictor learns log(1 + frames) per phoneme; at run time it alone decides the frame counts.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from compile.addon_writer import NetworkEntry, write_addon
from compile.fastspeech_voice import STACKS, fastspeech_networks
from compile.teacher import TeacherSplit
from tts_neuron.audio import AudioConfig


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


class FastSpeechTrainer(nn.Module):
    """The three networks wired for training: the decoder upsamples with the teacher's durations."""

    def __init__(self, networks: dict[str, nn.Module]) -> None:
        super().__init__()
        self.text_encoder = networks["text_encoder"]
        self.duration_predictor = networks["duration_predictor"]
        self.decoder = networks["decoder"]

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        encodings = self.text_encoder(batch.tokens, batch.token_mask)  # [B, N, C]
        log_durations = self.duration_predictor(encodings, batch.token_mask)  # [B, N]
        t = batch.mel.shape[1]
        # frame -> phoneme index per utterance; padded frames point at phoneme 0 and are masked anyway
        index = torch.zeros(len(encodings), t, dtype=torch.int64)  # [B, T]
        for b, durations in enumerate(batch.durations):
            owners = torch.repeat_interleave(torch.arange(len(durations)), durations)
            index[b, : len(owners)] = owners
        frames = torch.gather(
            encodings, 1, index.unsqueeze(-1).expand(-1, -1, encodings.shape[-1])
        )  # [B, T, C]
        return self.decoder(frames, batch.frame_mask), log_durations


def losses(model: FastSpeechTrainer, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    mel, log_durations = model(batch)
    frame_mask = batch.frame_mask.unsqueeze(-1)
    mel_loss = ((mel - batch.mel).abs() * frame_mask).sum() / (frame_mask.sum() * mel.shape[-1])
    target = torch.log1p(batch.durations.float())
    duration_loss = (((log_durations - target) ** 2) * batch.token_mask).sum() / batch.token_mask.sum()
    return mel_loss, duration_loss


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model: FastSpeechTrainer, split: TeacherSplit, max_frames: int) -> tuple[float, float]:
    model.eval()
    totals = torch.zeros(2)
    batches = make_batches(split, max_frames, random.Random(0))
    for indices in batches:
        totals += torch.stack(losses(model, collate(split, indices)))
    model.train()
    return float(totals[0]) / len(batches), float(totals[1]) / len(batches)


def plot_losses(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["mel"] for h in history], label="mel L1 (train)")
    ax.plot(steps, [h["duration"] for h in history], label="log-duration MSE (train)")
    evals = [h for h in history if "eval_mel" in h]
    ax.plot([h["step"] for h in evals], [h["eval_mel"] for h in evals], "o-", label="mel L1 (held out)")
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.set_title("fastspeech-en training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclass
class TrainConfig:
    epochs: int = 12
    max_frames: int = 6000
    """Padded frames per batch."""
    lr: float = 2e-3
    seed: int = 0
    limit: int = 0
    """If set, at most this many steps per epoch (smoke runs)."""
    sizes: dict[str, int] = field(default_factory=dict)
    """Overrides of the network sizes in compile/fastspeech_voice.py."""


def train(
    cfg: TrainConfig, train_split: TeacherSplit, held_out: TeacherSplit, n_symbols: int, n_mels: int
) -> tuple[dict[str, NetworkEntry], list[dict[str, float]]]:
    """Seeded training; returns the networks as addon entries and the loss history."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    entries = fastspeech_networks(n_symbols, n_mels, cfg.sizes)
    model = FastSpeechTrainer({name: entry.network for name, entry in entries.items()})
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=1e-6)
    steps_per_epoch = len(make_batches(train_split, cfg.max_frames, random.Random(0)))
    if cfg.limit:
        steps_per_epoch = min(steps_per_epoch, cfg.limit)
    total = steps_per_epoch * cfg.epochs
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params:,} parameters, {len(train_split)} utterances, {steps_per_epoch * cfg.epochs} steps")

    history: list[dict[str, float]] = []
    step = 0
    progress = tqdm(total=total, desc="training", unit="step")
    for epoch in range(cfg.epochs):
        for indices in make_batches(train_split, cfg.max_frames, rng)[:steps_per_epoch]:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, cfg.lr, warmup=min(400, total // 10 + 1))
            mel_loss, duration_loss = losses(model, collate(train_split, indices))
            optimizer.zero_grad(set_to_none=True)
            (mel_loss + duration_loss).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            history.append({"step": step, "mel": mel_loss.item(), "duration": duration_loss.item()})
            progress.set_postfix(epoch=epoch, mel=f"{mel_loss.item():.3f}", dur=f"{duration_loss.item():.3f}")
            progress.update()
        eval_mel, eval_duration = evaluate(model, held_out, cfg.max_frames)
        history[-1].update(eval_mel=eval_mel, eval_duration=eval_duration)
        progress.write(f"epoch {epoch}: held-out mel L1 {eval_mel:.4f}, log-duration MSE {eval_duration:.4f}")
    progress.close()
    model.eval()
    return entries, history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/teacher"))
    parser.add_argument("--out", type=Path, default=Path("addons/fastspeech-en"))
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument(
        "--max-frames", type=int, default=TrainConfig.max_frames, help="padded frames per batch"
    )
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="at most N steps per epoch (smoke runs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.data / "meta.json").is_file():
        raise SystemExit(f"{args.data}: no teacher data; run `make teacher` first")
    meta = json.loads((args.data / "meta.json").read_text())
    symbols, audio = meta["symbols"], AudioConfig.from_dict(meta["audio"])
    train_split = TeacherSplit.load(args.data / "train.safetensors")
    held_out = TeacherSplit.load(args.data / "eval.safetensors")
    cfg = TrainConfig(
        epochs=args.epochs, max_frames=args.max_frames, lr=args.lr, seed=args.seed, limit=args.limit
    )

    started = time.perf_counter()
    entries, history = train(cfg, train_split, held_out, len(symbols), audio.n_mels)
    minutes = (time.perf_counter() - started) / 60
    write_addon(
        args.out,
        name="fastspeech-en",
        description=(
            f"FastSpeech-style English voice distilled from espeak-ng ({len(train_split)} utterances, "
            f"{cfg.epochs} epochs, {minutes:.0f} min on {args.threads} CPU threads; `make voice`)."
        ),
        trained=True,
        symbols=symbols,
        networks=entries,
        stacks=STACKS,
        default_stack="cpu",
        audio=audio,
    )
    n_params = sum(p.numel() for entry in entries.values() for p in entry.network.parameters())
    record = {"parameters": n_params, "minutes": minutes, "threads": args.threads, "config": asdict(cfg)}
    kept = [h for i, h in enumerate(history) if i % 25 == 0 or "eval_mel" in h]
    (args.out / "training.json").write_text(json.dumps({**record, "history": kept}, indent=1))
    plot_losses(history, args.out / "training-loss.png")
    print(f"wrote {args.out} after {minutes:.1f} minutes")


if __name__ == "__main__":
    main()
