"""Trains the FastSpeech-style voice on espeak-ng teacher data and writes it as an addon.

    python -m tts_neuron_build.train_fastspeech --data data/teacher --out addons/fastspeech-en  (make voice)

Seeded and deterministic on a given machine; sized to finish in about 40 minutes on 2 CPU cores. The
decoder learns from the teacher's own durations (the upsampler is given the true frame counts), and the
duration predictor learns log(1 + frames) per phoneme; at run time it alone decides the frame counts.
"""

from __future__ import annotations

import random

import torch
from torch import nn

from tts_neuron_build.addon_writer import NetworkEntry
from tts_neuron_build.fastspeech_voice import STACKS, fastspeech_networks
from tts_neuron_build.teacher import TeacherSplit
from tts_neuron_build.training import Batch, Recipe, TrainConfig, fit, main


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


def losses(model: FastSpeechTrainer, batch: Batch) -> dict[str, torch.Tensor]:
    mel, log_durations = model(batch)
    frame_mask = batch.frame_mask.unsqueeze(-1)
    mel_loss = ((mel - batch.mel).abs() * frame_mask).sum() / (frame_mask.sum() * mel.shape[-1])
    target = torch.log1p(batch.durations.float())
    duration_loss = (((log_durations - target) ** 2) * batch.token_mask).sum() / batch.token_mask.sum()
    return {"mel": mel_loss, "duration": duration_loss}


def train(
    cfg: TrainConfig, train_split: TeacherSplit, held_out: TeacherSplit, n_symbols: int, n_mels: int
) -> tuple[dict[str, NetworkEntry], list[dict[str, float]]]:
    """Seeded training; returns the networks as addon entries and the loss history."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    entries = fastspeech_networks(n_symbols, n_mels, cfg.sizes)
    model = FastSpeechTrainer({name: entry.network for name, entry in entries.items()})
    return entries, fit(model, losses, cfg, train_split, held_out, rng)


RECIPE = Recipe(
    name="fastspeech-en",
    describe=(
        "FastSpeech-style English voice distilled from espeak-ng ({utterances} utterances, {epochs} epochs, "
        "{minutes} min on {threads} CPU threads; `make voice`)."
    ),
    config=TrainConfig,
    train=train,
    stacks=STACKS,
    curves={"mel": "mel L1", "duration": "log-duration MSE"},
)

if __name__ == "__main__":
    main(RECIPE, __doc__ or "")
