"""Where the neural vocoder loses quality: its magnitude or its phase, each swapped for the teacher's own.

    python benchmarks/vocoder_oracle.py [--addon addons/fastspeech-en] [--sentences 40]

For held-out sentences, espeak-ng's audio is analysed with the runtime's STFT (the teacher's magnitude
and phase) and its log-mel is vocoded; then the inverse STFT is run on every pairing of {our, the
teacher's} magnitude with {our, the teacher's} phase, and PESQ (wide band) and STOI against espeak-ng's
audio are reported, with Griffin-Lim's for reference. The teacher/teacher pairing only checks the inverse
STFT (it should be near perfect). Writes benchmarks/results/vocoder_oracle.{json,md}.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from intelligibility import RECOGNISER_RATE, resample  # noqa: E402
from vocoder_speed import addon_vocoder, vocoder_arguments  # noqa: E402

from tts_neuron.audio import GriffinLim, MelSpectrogram, _hann, _stft  # noqa: E402
from tts_neuron.frontend.espeak import Espeak  # noqa: E402
from tts_neuron.models.vocoder import to_real_imag  # noqa: E402


def quality(reference: np.ndarray, audio: np.ndarray, rate: int) -> tuple[float, float]:
    """(PESQ wide band, STOI) of `audio` against `reference`, both at 16 kHz, trimmed to one length."""
    from pesq import pesq
    from pystoi import stoi

    n = min(len(reference), len(audio))
    ref = resample(reference[:n], rate, RECOGNISER_RATE)
    deg = resample(audio[:n], rate, RECOGNISER_RATE)
    return float(pesq(RECOGNISER_RATE, ref, deg, "wb")), float(stoi(ref, deg, RECOGNISER_RATE))


def main() -> None:
    args = vocoder_arguments(__doc__ or "", sentences=40)
    addon, _, network = addon_vocoder(args.addon)
    cfg, rate = addon.audio, addon.audio.sample_rate
    mel_of, griffin_lim = MelSpectrogram(cfg), GriffinLim(cfg)
    texts = (args.data / "eval.txt").read_text(encoding="utf-8").splitlines()
    picks = np.linspace(0, len(texts) - 1, min(args.sentences, len(texts))).round().astype(int)

    scores: dict[str, list[tuple[float, float]]] = {}
    with torch.inference_mode():
        for i in picks:
            espeak = Espeak.get().synthesize(texts[i], addon.language).audio.astype(np.float32) / 32768.0
            wave = torch.from_numpy(espeak)
            log_mel = mel_of(wave)  # [T, n_mels]
            t = log_mel.shape[0]
            teacher = _stft(wave[None], cfg, _hann(cfg))[..., :t].transpose(1, 2)  # [1, T, F] complex
            mask = torch.ones(1, t)
            log_magnitude, phase_x, phase_y = network.spectrum(log_mel[None], mask)  # [1, T, F] each
            ours = torch.complex(*to_real_imag(log_magnitude, phase_x, phase_y))  # [1, T, F]
            magnitudes = {"ours": ours.abs(), "teacher's": teacher.abs()}
            phases = {
                "ours": ours / ours.abs().clamp(min=1e-9),
                "teacher's": teacher / teacher.abs().clamp(min=1e-9),
            }
            systems = {"Griffin-Lim (32 iterations)": griffin_lim(log_mel)}
            for m_name, magnitude in magnitudes.items():
                for p_name, phase in phases.items():
                    spectrum = magnitude * phase
                    audio = network.istft(spectrum.real, spectrum.imag, mask)[0]
                    systems[f"{m_name} magnitude, {p_name} phase"] = audio
            for name, audio in systems.items():
                try:
                    scores.setdefault(name, []).append(quality(espeak, audio.numpy(), rate))
                except Exception:  # noqa: BLE001 - pesq refuses some utterances (no speech found); skip them
                    continue
    rows = ["| magnitude, phase | PESQ (wide band) | STOI | sentences |", "|---|---:|---:|---:|"]
    report = {}
    for name, values in scores.items():
        pesq_median = statistics.median(v[0] for v in values)
        stoi_median = statistics.median(v[1] for v in values)
        report[name] = {"pesq_median": pesq_median, "stoi_median": stoi_median, "sentences": len(values)}
        rows.append(f"| {name} | {pesq_median:.2f} | {stoi_median:.3f} | {len(values)} |")
    command = "python benchmarks/vocoder_oracle.py " + " ".join(sys.argv[1:])
    table = "\n".join(rows) + f"\n\nMedians over held-out sentences. Command: `{command}`\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocoder_oracle.json").write_text(
        json.dumps({"systems": report, "command": command}, indent=1)
    )
    (args.out / "vocoder_oracle.md").write_text("# Where the vocoder loses quality\n\n" + table)


if __name__ == "__main__":
    main()
