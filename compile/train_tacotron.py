"""Trains the Tacotron2-style voice on the espeak-ng teacher data and writes it as an addon.

    python -m tts_neuron_build.train_tacotron --data data/teacher --out addons/tacotron-en
    (or: make voice-tacotron)

Teacher forcing, as Tacotron2 trains: every step is fed the true last frame of the step before. The
teacher's phoneme durations say which phoneme each step speaks, and a cross-entropy term pulls the
attention weights onto it (guided attention), so attention aligns in minutes instead of hours; at run
time attention is free and nothing but the network decides where it looks. Seeded; sized to finish
within 90 minutes on 2 CPU cores.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from tts_neuron.models.tacotron import AttentionStep, Postnet, TacotronEncoder
from tts_neuron_build.addon_writer import NetworkEntry
from tts_neuron_build.tacotron_voice import STACKS, tacotron_networks
from tts_neuron_build.teacher import TeacherSplit
from tts_neuron_build.training import Batch, Recipe, TrainConfig, fit, main


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


@dataclass
class TacotronConfig(TrainConfig):
    epochs: int = 8
    max_frames: int = 4000
    lr: float = 1.5e-3
    warmup: int = 300
    prenet_dropout: float = 0.5


def train(
    cfg: TacotronConfig, train_split: TeacherSplit, held_out: TeacherSplit, n_symbols: int, n_mels: int
) -> tuple[dict[str, NetworkEntry], list[dict[str, float]]]:
    """Seeded training; returns the networks as addon entries and the loss history."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    entries = tacotron_networks(n_symbols, n_mels, cfg.sizes)
    model = TacotronTrainer({name: entry.network for name, entry in entries.items()}, cfg.prenet_dropout)
    return entries, fit(model, losses, cfg, train_split, held_out, rng)


RECIPE = Recipe(
    name="tacotron-en",
    describe=(
        "Tacotron2-style English voice (attention, autoregressive) distilled from espeak-ng ({utterances} "
        "utterances, {epochs} epochs, {minutes} min on {threads} CPU threads; `make voice-tacotron`)."
    ),
    config=TacotronConfig,
    train=train,
    stacks=STACKS,
    curves={"postnet": "mel L1 after postnet", "stop": "stop BCE", "attention": "attention CE"},
)

if __name__ == "__main__":
    main(RECIPE, __doc__ or "")
