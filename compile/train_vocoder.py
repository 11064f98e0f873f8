"""Trains the neural vocoder on espeak-ng teacher audio and installs it in the shipped voices.

    python -m tts_neuron_build.train_vocoder --data data/teacher \
        --addons addons/fastspeech-en addons/tacotron-en     (or: make vocoder)

The teacher's sentences are spoken again by espeak-ng (deterministic, about 2 ms each) and their log-mel is
made by the runtime's own `MelSpectrogram`, so the vocoder learns from exactly the features it will be
given. No discriminator: every loss compares with the teacher's own STFT, phase included, which gives a
dense signal that a small network can follow in an hour on 2 CPU cores:

- log-magnitude L1, and L1 on the real and imaginary parts of the spectrum;
- anti-wrapped phase losses (instantaneous phase, group delay, instantaneous frequency), weighted by the
  teacher's magnitude so that the phase of silent bins does not count;
- consistency: the STFT of the synthesised audio against the predicted spectrum;
- on the audio itself: mel L1 and a multi-resolution STFT loss (spectral convergence and log magnitude).

Seeded; training draws random 64-frame segments of whole-utterance features.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from tts_neuron.audio import AudioConfig, MelSpectrogram, _reflect_pad
from tts_neuron.frontend.espeak import Espeak
from tts_neuron.models.vocoder import MelVocoder, to_real_imag
from tts_neuron_build.teacher import TeacherSplit
from tts_neuron_build.training import learning_rate, plot_losses, teacher_meta
from tts_neuron_build.vocoder_voice import install_vocoder, vocoder_config


@dataclass
class VocoderTrainConfig:
    steps: int = 12000
    batch: int = 16
    segment_frames: int = 64
    lr: float = 1e-3
    warmup: int = 300
    seed: int = 0
    eval_every: int = 1000


@dataclass
class TeacherAudio:
    """Every utterance's reflect-padded audio and log-mel, concatenated, with offsets per utterance."""

    padded: torch.Tensor  # [sum(S + n_fft)] float32
    mel: torch.Tensor  # [sum(T), n_mels] float32
    audio_offsets: list[int]
    frame_offsets: list[int]

    def __len__(self) -> int:
        return len(self.frame_offsets) - 1

    def frames(self, i: int) -> int:
        return self.frame_offsets[i + 1] - self.frame_offsets[i]


def speak_split(texts: list[str], audio: AudioConfig, desc: str) -> TeacherAudio:
    """Speak every text with espeak-ng; keep its padded audio and the runtime's log-mel of it."""
    mel_of = MelSpectrogram(audio)
    pad = audio.n_fft // 2
    padded, mels, audio_offsets, frame_offsets = [], [], [0], [0]
    for text in tqdm(texts, desc=desc, unit="utt", mininterval=5):
        samples = Espeak.get().synthesize(text).audio.astype(np.float32) / 32768.0
        wave = torch.from_numpy(samples)
        with torch.no_grad():
            mel = mel_of(wave)  # [T, n_mels]
        padded.append(_reflect_pad(wave[None], pad)[0])  # [S + n_fft]
        mels.append(mel)
        audio_offsets.append(audio_offsets[-1] + len(padded[-1]))
        frame_offsets.append(frame_offsets[-1] + len(mel))
    return TeacherAudio(torch.cat(padded), torch.cat(mels), audio_offsets, frame_offsets)


@dataclass
class Segments:
    log_mel: torch.Tensor  # [B, F, n_mels]
    spectrum: torch.Tensor  # [B, F, bins] complex: the teacher's STFT of those frames
    audio: torch.Tensor  # [B, F * hop]: the teacher's samples attributed to those frames


def draw_segments(
    data: TeacherAudio, picks: list[tuple[int, int]], frames: int, cfg: AudioConfig
) -> Segments:
    """Frames [f, f + frames) of utterance i for each (i, f); shorter utterances are zero-padded."""
    hop, n_fft = cfg.hop_length, cfg.n_fft
    window = torch.hann_window(cfg.win_length, periodic=True)
    mels, waves, spans = [], [], []
    for i, f in picks:
        n = min(frames, data.frames(i) - f)
        mel = torch.full((frames, cfg.n_mels), math.log(cfg.log_floor))
        mel[:n] = data.mel[data.frame_offsets[i] + f : data.frame_offsets[i] + f + n]
        # Padded sample f * hop is frame f's first window sample; n frames span (n - 1) * hop + n_fft.
        a = data.audio_offsets[i] + f * hop
        span = torch.zeros((frames - 1) * hop + n_fft)
        span[: (n - 1) * hop + n_fft] = data.padded[a : a + (n - 1) * hop + n_fft]
        mels.append(mel)
        spans.append(span)
        waves.append(span[n_fft // 2 : n_fft // 2 + frames * hop])
    spectrum = torch.stft(
        torch.stack(spans), n_fft, hop, cfg.win_length, window, center=False, return_complex=True
    )  # [B, bins, F]
    return Segments(torch.stack(mels), spectrum.transpose(1, 2), torch.stack(waves))


def anti_wrap(x: torch.Tensor) -> torch.Tensor:
    """|x| folded into [0, pi]: the distance between two phases whatever their wrapping."""
    return (x - 2 * math.pi * torch.round(x / (2 * math.pi))).abs()


class Losses:
    """The named losses of one batch; training minimises their weighted sum."""

    WEIGHTS = {
        "log_magnitude": 45.0,
        "phase": 100.0,
        "real_imag": 20.0,
        "consistency": 20.0,
        "mel": 45.0,
        "stft": 2.5,
    }
    RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))

    def __init__(self, cfg: AudioConfig) -> None:
        self.cfg = cfg
        self.mel = MelSpectrogram(cfg)
        self.window = torch.hann_window(cfg.win_length, periodic=True)

    def __call__(self, model: MelVocoder, batch: Segments) -> dict[str, torch.Tensor]:
        mask = torch.ones(batch.log_mel.shape[:2])  # [B, F]
        log_magnitude, phase_x, phase_y = model.spectrum(batch.log_mel, mask)  # [B, F, bins] each
        real, imag = to_real_imag(log_magnitude, phase_x, phase_y)
        audio = model.istft(real, imag, mask)  # [B, F * hop]
        target = batch.spectrum
        magnitude = target.abs()
        out: dict[str, torch.Tensor] = {}
        out["log_magnitude"] = (log_magnitude - magnitude.clamp(min=1e-5).log()).abs().mean()
        # Phase, weighted by the teacher's magnitude (the phase of a silent bin is noise).
        weight = magnitude / magnitude.mean()
        phase, true_phase = torch.atan2(phase_y, phase_x), target.angle()
        instantaneous = anti_wrap(phase - true_phase)
        group_delay = anti_wrap(phase.diff(dim=2) - true_phase.diff(dim=2))
        frequency = anti_wrap(phase.diff(dim=1) - true_phase.diff(dim=1))
        out["phase"] = (
            (instantaneous * weight).mean()
            + (group_delay * weight[:, :, 1:]).mean()
            + (frequency * weight[:, 1:]).mean()
        )
        scale = magnitude.mean()  # spectra in units of the batch's mean magnitude
        out["real_imag"] = ((real - target.real).abs() + (imag - target.imag).abs()).mean() / scale
        frames = batch.log_mel.shape[1]
        rebuilt = self.stft(audio, self.cfg.n_fft, self.cfg.hop_length)[..., :frames]  # [B, bins, F]
        out["consistency"] = (
            (rebuilt.real.transpose(1, 2) - real).abs() + (rebuilt.imag.transpose(1, 2) - imag).abs()
        )[:, 2:-2].mean() / scale  # the segment's edge frames lack their neighbours' overlap
        out["mel"] = (self.mel(audio)[:, :frames] - batch.log_mel)[:, 2:-2].abs().mean()
        stft = torch.zeros(())
        for n_fft, hop in self.RESOLUTIONS:
            ours = self.stft(audio, n_fft, hop).abs()
            theirs = self.stft(batch.audio, n_fft, hop).abs()
            stft = stft + torch.linalg.vector_norm(ours - theirs) / torch.linalg.vector_norm(theirs)
            stft = stft + (ours.clamp(min=1e-5).log() - theirs.clamp(min=1e-5).log()).abs().mean()
        out["stft"] = stft
        return {key: value * self.WEIGHTS[key] for key, value in out.items()}

    def stft(self, audio: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
        window = self.window if n_fft == self.cfg.win_length else torch.hann_window(n_fft, periodic=True)
        return torch.stft(audio, n_fft, hop, n_fft, window, center=True, return_complex=True)


def random_picks(data: TeacherAudio, count: int, frames: int, rng: random.Random) -> list[tuple[int, int]]:
    picks = []
    for _ in range(count):
        i = rng.randrange(len(data))
        picks.append((i, rng.randrange(max(1, data.frames(i) - frames + 1))))
    return picks


@torch.no_grad()
def evaluate(model: MelVocoder, losses: Losses, batches: list[Segments]) -> dict[str, float]:
    model.eval()
    totals: dict[str, float] = {}
    for batch in batches:
        for key, value in losses(model, batch).items():
            totals[key] = totals.get(key, 0.0) + value.item() / len(batches)
    model.train()
    return totals


def train(cfg: VocoderTrainConfig, train_data: TeacherAudio, held_out: TeacherAudio, audio: AudioConfig):
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model = MelVocoder(**vocoder_config(audio)).train()
    losses = Losses(audio)
    eval_rng = random.Random(1)
    eval_batches = [
        draw_segments(
            held_out,
            random_picks(held_out, cfg.batch, cfg.segment_frames, eval_rng),
            cfg.segment_frames,
            audio,
        )
        for _ in range(8)
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=1e-6)
    print(
        f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(train_data)} utterances, "
        f"{cfg.steps} steps"
    )
    history: list[dict[str, float]] = []
    progress = tqdm(range(cfg.steps), desc="training", unit="step", mininterval=10)
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg.steps, cfg.lr, cfg.warmup)
        batch = draw_segments(
            train_data,
            random_picks(train_data, cfg.batch, cfg.segment_frames, rng),
            cfg.segment_frames,
            audio,
        )
        parts = losses(model, batch)
        optimizer.zero_grad(set_to_none=True)
        torch.stack(list(parts.values())).sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        record = {"step": step + 1, **{key: value.item() for key, value in parts.items()}}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            held = evaluate(model, losses, eval_batches)
            record.update({f"eval_{key}": value for key, value in held.items()})
            progress.write(f"step {step + 1}: held out " + ", ".join(f"{k} {v:.3f}" for k, v in held.items()))
        history.append(record)
        progress.set_postfix(
            {key: f"{value:.2f}" for key, value in record.items() if key != "step"}, refresh=False
        )
    model.eval()
    return model, history


def main() -> None:
    defaults = VocoderTrainConfig()
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/teacher"))
    parser.add_argument(
        "--addons", type=Path, nargs="+", default=[Path("addons/fastspeech-en"), Path("addons/tacotron-en")]
    )
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="use only N training utterances (smoke runs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    audio = AudioConfig.from_dict(teacher_meta(args.data)["audio"])
    train_texts = TeacherSplit.load(args.data / "train.safetensors").texts
    held_texts = TeacherSplit.load(args.data / "eval.safetensors").texts
    if args.limit:
        train_texts = train_texts[: args.limit]
    cfg = VocoderTrainConfig(
        steps=args.steps, lr=args.lr, seed=args.seed, eval_every=min(defaults.eval_every, args.steps)
    )

    started = time.perf_counter()
    train_data = speak_split(train_texts, audio, "espeak-ng train")
    held_out = speak_split(held_texts, audio, "espeak-ng held out")
    model, history = train(cfg, train_data, held_out, audio)
    minutes = (time.perf_counter() - started) / 60
    save_file(  # kept beside the teacher data too, so installing can be redone without retraining
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(args.data / "vocoder.safetensors")
    )
    for addon in args.addons:
        install_vocoder(addon, model)
    record = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "minutes": minutes,
        "threads": args.threads,
        "utterances": len(train_data),
        "config": asdict(cfg),
        "history": [h for h in history if h["step"] % 25 == 0 or any(k.startswith("eval_") for k in h)],
    }
    out = args.addons[0] / "vocoder-training.json"
    out.write_text(json.dumps(record, indent=1))
    plot_losses(
        history,
        out.with_name("vocoder-training-loss.png"),
        "vocoder training",
        {"log_magnitude": "log-magnitude L1", "phase": "phase (anti-wrapped)", "mel": "mel L1"},
    )
    print(f"installed the vocoder in {', '.join(map(str, args.addons))} after {minutes:.1f} minutes")


if __name__ == "__main__":
    main()
