"""Trains the Tacotron2-style voice on the espeak-ng teacher data and writes it as an addon.

    python -m compile.train_tacotron --data data/teacher --out addons/tacotron-en  (or: make voice-tacotron)

Teacher forcing, as Tacotron2 trains: every step is fed the true last frame of the step before. The
teacher's phoneme durations say which phoneme each step speaks, and a cross-entropy term pulls the
attention weights onto it (guided attention), so attention aligns in minutes instead of hours; at run
time attention is free and nothing but the network decides where it looks. Seeded; sized to finish
within 90 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from compile.addon_writer import NetworkEntry, write_addon
from compile.tacotron_voice import STACKS, tacotron_networks
from compile.teacher import TeacherSplit
from compile.train_fastspeech import Batch, collate, learning_rate, make_batches
from tts_neuron.audio import AudioConfig
from tts_neuron.models.tacotron import AttentionStep, Postnet, TacotronEncoder


def step_targets(durations: torch.Tensor, n_steps: int, reduction: int) -> torch.Tensor:
    """The phoneme each decoder step speaks: the owner of the middle frame of its `reduction` frames."""
    # durations: [N] frames -> [n_steps] phoneme indices (clamped to the last phoneme past the end)
    ends = torch.cumsum(durations, 0)
    middles = torch.arange(n_steps) * reduction + reduction // 2
    return torch.searchsorted(ends, middles, right=True).clamp(max=len(durations) - 1)


class TacotronTrainer(nn.Module):
    """The three networks wired for teacher-forced training."""

    def __init__(self, networks: dict[str, nn.Module], prenet_dropout: float) -> None:
        super().__init__()
        self.encoder: TacotronEncoder = networks["encoder"]  # type: ignore[assignment]
        self.step: AttentionStep = networks["decoder_step"]  # type: ignore[assignment]
        self.postnet: Postnet = networks["postnet"]  # type: ignore[assignment]
        self.keep = 1 - prenet_dropout

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(decoder mel [B, S*r, M], postnet mel, stop logits [B, S], attention weights [B, S, N])."""
        r = self.step.reduction
        memory, keys = self.encoder(batch.tokens, batch.token_mask)  # [B, N, C], [B, N, A]
        b, t, m = batch.mel.shape
        n_steps = math.ceil(t / r)
        # step s is fed the last true frame of step s - 1; step 0 a frame of zeros
        last = torch.cat([batch.mel.new_zeros(b, 1, m), batch.mel[:, r - 1 :: r][:, : n_steps - 1]], dim=1)
        masks = (
            torch.bernoulli(last.new_full((b, n_steps, 2, self.step.prenet_channels), self.keep)) / self.keep
        )
        prenet_out = self.step.run_prenet(last, masks)  # [B, S, P]
        alignment = memory.new_zeros(b, 2, memory.shape[1])
        state = memory.new_zeros(b, self.step.state_size)
        outputs, weights = [], []
        for s in range(n_steps):
            out, alignment, state = self.step.attend(
                prenet_out[:, s], memory, keys, batch.token_mask, alignment, state
            )
            outputs.append(out)
            weights.append(alignment[:, 0])
        frames, stop = self.step.project(torch.stack(outputs, dim=1))  # [B, S, r, M], [B, S]
        mel = frames.flatten(1, 2)[:, :t]  # [B, T, M]
        return mel, self.postnet(mel, batch.frame_mask), stop, torch.stack(weights, dim=1)


def losses(model: TacotronTrainer, batch: Batch) -> dict[str, torch.Tensor]:
    mel, post, stop, weights = model(batch)
    r = model.step.reduction
    frame_mask = batch.frame_mask.unsqueeze(-1)
    denominator = frame_mask.sum() * mel.shape[-1]
    mel_loss = ((mel - batch.mel).abs() * frame_mask).sum() / denominator
    post_loss = ((post - batch.mel).abs() * frame_mask).sum() / denominator

    n_frames = batch.frame_mask.sum(1).long()  # [B]
    last_step = (n_frames - 1) // r  # [B]
    steps = torch.arange(stop.shape[1])
    stop_target = (steps[None] >= last_step[:, None]).float()  # [B, S]
    stop_loss = F.binary_cross_entropy_with_logits(stop, stop_target, pos_weight=torch.tensor(5.0))

    step_mask = (steps[None] <= last_step[:, None]).float()  # [B, S]
    targets = torch.zeros_like(stop, dtype=torch.int64)
    for i, (durations, n_tokens) in enumerate(
        zip(batch.durations, batch.token_mask.sum(1).long(), strict=True)
    ):
        targets[i] = step_targets(durations[:n_tokens], stop.shape[1], r)
    picked = torch.gather(weights, 2, targets.unsqueeze(-1)).squeeze(-1)  # [B, S]
    attention_loss = -(torch.log(picked + 1e-6) * step_mask).sum() / step_mask.sum()
    return {"mel": mel_loss, "postnet": post_loss, "stop": stop_loss, "attention": attention_loss}


@torch.no_grad()
def evaluate(model: TacotronTrainer, split: TeacherSplit, max_frames: int) -> dict[str, float]:
    model.eval()
    totals: dict[str, float] = {}
    batches = make_batches(split, max_frames, random.Random(0))
    for indices in batches:
        for key, value in losses(model, collate(split, indices)).items():
            totals[key] = totals.get(key, 0.0) + value.item() / len(batches)
    model.train()
    return totals


def plot_losses(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in history]
    for key, label in [
        ("postnet", "mel L1 after postnet"),
        ("stop", "stop BCE"),
        ("attention", "attention CE"),
    ]:
        ax.plot(steps, [h[key] for h in history], label=f"{label} (train)")
    evals = [h for h in history if "eval_postnet" in h]
    ax.plot([h["step"] for h in evals], [h["eval_postnet"] for h in evals], "o-", label="mel L1 (held out)")
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.set_title("tacotron-en training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclass
class TrainConfig:
    epochs: int = 8
    max_frames: int = 4000
    """Padded frames per batch."""
    lr: float = 1.5e-3
    prenet_dropout: float = 0.5
    seed: int = 0
    limit: int = 0
    """If set, at most this many steps per epoch (smoke runs)."""
    sizes: dict[str, Any] = field(default_factory=dict)
    """Overrides of the network sizes in compile/tacotron_voice.py."""


def train(
    cfg: TrainConfig, train_split: TeacherSplit, held_out: TeacherSplit, n_symbols: int, n_mels: int
) -> tuple[dict[str, NetworkEntry], list[dict[str, float]]]:
    """Seeded training; returns the networks as addon entries and the loss history."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    entries = tacotron_networks(n_symbols, n_mels, cfg.sizes)
    model = TacotronTrainer({name: entry.network for name, entry in entries.items()}, cfg.prenet_dropout)
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
                group["lr"] = learning_rate(step, total, cfg.lr, warmup=min(300, total // 10 + 1))
            parts = losses(model, collate(train_split, indices))
            optimizer.zero_grad(set_to_none=True)
            sum(parts.values()).backward()  # type: ignore[union-attr]
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            history.append({"step": step, **{key: value.item() for key, value in parts.items()}})
            progress.set_postfix({key: f"{value.item():.3f}" for key, value in parts.items()}, refresh=False)
            progress.update()
        held = evaluate(model, held_out, cfg.max_frames)
        history[-1].update({f"eval_{key}": value for key, value in held.items()})
        progress.write(f"epoch {epoch}: held out " + ", ".join(f"{k} {v:.4f}" for k, v in held.items()))
    progress.close()
    model.eval()
    return entries, history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/teacher"))
    parser.add_argument("--out", type=Path, default=Path("addons/tacotron-en"))
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
        name="tacotron-en",
        description=(
            f"Tacotron2-style English voice (attention, autoregressive) distilled from espeak-ng "
            f"({len(train_split)} utterances, {cfg.epochs} epochs, {minutes:.0f} min on {args.threads} CPU "
            "threads; `make voice-tacotron`)."
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
    kept = [h for i, h in enumerate(history) if i % 25 == 0 or "eval_postnet" in h]
    (args.out / "training.json").write_text(json.dumps({**record, "history": kept}, indent=1))
    plot_losses(history, args.out / "training-loss.png")
    print(f"wrote {args.out} after {minutes:.1f} minutes")


if __name__ == "__main__":
    main()
