"""Teacher data from espeak-ng: for each sentence its symbol ids, per-phoneme frame durations and log-mel.

    python -m tts_neuron_build.teacher --out data/teacher

Text goes through the runtime's own frontend (normalisation, readable characters), so training sees what
synthesis will see. espeak-ng reports each phoneme's start sample; rounding those starts to frames at the
mel hop gives durations that tile the utterance: they sum to its number of mel frames exactly.
Generated data is not committed; this recipe regenerates it in about a minute.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from tts_neuron.audio import AudioConfig, MelSpectrogram
from tts_neuron.frontend import PAD_SYMBOL, prepare_text
from tts_neuron.frontend.espeak import Espeak
from tts_neuron.frontend.sentences import has_speakable
from tts_neuron_build.corpus import docstring_sentences, generated_sentences
from tts_neuron_build.symbols import close_under_stress

EVAL_EVERY = 25
"""One sentence in this many (chosen by a hash of its text) is held out for evaluation."""


def frame_durations(starts: list[int], n_samples: int, hop: int) -> np.ndarray:
    """Phoneme start samples to frame counts that sum to the mel frame count, n_samples // hop + 1.

    Each boundary between phonemes rounds to the nearest frame; whatever precedes the first phoneme
    belongs to it, and the last phoneme runs to the end.
    """
    if not starts:
        raise ValueError("an utterance has at least one phoneme")
    n_frames = n_samples // hop + 1
    inner = np.clip(np.rint(np.asarray(starts[1:], dtype=np.float64) / hop), 0, n_frames).astype(np.int64)
    return np.diff(np.concatenate([[0], np.maximum.accumulate(inner), [n_frames]]))


@dataclass
class Utterance:
    text: str
    phonemes: list[str]
    durations: np.ndarray  # [N] frames
    mel: torch.Tensor  # [T, n_mels]


def synthesize_teacher(text: str, mel: MelSpectrogram, hop: int, language: str = "en-us") -> Utterance | None:
    """One sentence through espeak-ng; None when it has nothing to say."""
    prepared = prepare_text(text)
    if not has_speakable(prepared):  # espeak-ng would read the punctuation's names
        return None
    synthesis = Espeak.get().synthesize(prepared, language)
    if not synthesis.phonemes or not len(synthesis.audio):
        return None
    audio = torch.from_numpy(synthesis.audio.astype(np.float32) / 32768.0)
    features = mel(audio)  # [T, n_mels]
    durations = frame_durations([p.start for p in synthesis.phonemes], len(audio), hop)
    assert durations.sum() == features.shape[0]
    return Utterance(prepared, [p.name for p in synthesis.phonemes], durations, features)


def is_eval_sentence(text: str) -> bool:
    return int(hashlib.sha1(text.encode()).hexdigest(), 16) % EVAL_EVERY == 0


def save_split(path: Path, utterances: list[Utterance], symbol_ids: dict[str, int]) -> None:
    """All utterances of a split in one safetensors file: concatenated arrays plus offsets."""
    tokens = [torch.tensor([symbol_ids[p] for p in u.phonemes], dtype=torch.int64) for u in utterances]
    tensors = {
        "tokens": torch.cat(tokens),
        "durations": torch.cat([torch.from_numpy(u.durations) for u in utterances]),
        "mel": torch.cat([u.mel for u in utterances]).to(torch.float16),
        "token_offsets": torch.tensor(np.cumsum([0] + [len(t) for t in tokens]), dtype=torch.int64),
        "frame_offsets": torch.tensor(
            np.cumsum([0] + [u.mel.shape[0] for u in utterances]), dtype=torch.int64
        ),
    }
    save_file(tensors, str(path))
    path.with_suffix(".txt").write_text("".join(u.text + "\n" for u in utterances), encoding="utf-8")


@dataclass
class TeacherSplit:
    """One split loaded back: item i is (tokens [N], durations [N], mel [T, n_mels])."""

    tokens: torch.Tensor
    durations: torch.Tensor
    mel: torch.Tensor
    token_offsets: torch.Tensor
    frame_offsets: torch.Tensor
    texts: list[str]

    @classmethod
    def load(cls, path: Path) -> TeacherSplit:
        t = load_file(str(path))
        texts = path.with_suffix(".txt").read_text(encoding="utf-8").splitlines()
        return cls(t["tokens"], t["durations"], t["mel"], t["token_offsets"], t["frame_offsets"], texts)

    def __len__(self) -> int:
        return len(self.texts)

    def item(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, b = int(self.token_offsets[i]), int(self.token_offsets[i + 1])
        c, d = int(self.frame_offsets[i]), int(self.frame_offsets[i + 1])
        return self.tokens[a:b], self.durations[a:b], self.mel[c:d].float()


def build(sentences: Iterable[str], out: Path, audio: AudioConfig) -> dict[str, int]:
    mel = MelSpectrogram(audio)
    splits: dict[str, list[Utterance]] = {"train": [], "eval": []}
    for text in tqdm(list(sentences), desc="espeak-ng teacher", unit="utt"):
        utterance = synthesize_teacher(text, mel, audio.hop_length)
        if utterance is not None:
            splits["eval" if is_eval_sentence(text) else "train"].append(utterance)
    seen = {p for u in splits["train"] + splits["eval"] for p in u.phonemes}
    symbols = [PAD_SYMBOL, *close_under_stress(seen)]
    ids = {s: i for i, s in enumerate(symbols)}
    out.mkdir(parents=True, exist_ok=True)
    for name, utterances in splits.items():
        save_split(out / f"{name}.safetensors", utterances, ids)
    (out / "meta.json").write_text(json.dumps({"symbols": symbols, "audio": audio.to_dict()}, indent=1))
    return {name: len(u) for name, u in splits.items()}


def default_sentences() -> list[str]:
    """Every docstring sentence plus 1,500 generated ones: about 7,800 utterances."""
    return list(itertools.chain(docstring_sentences(), generated_sentences(1500, seed=0)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Generate espeak-ng teacher data (tokens, durations, log-mel)."
    )
    parser.add_argument("--out", type=Path, default=Path("data/teacher"))
    args = parser.parse_args()
    counts = build(default_sentences(), args.out, AudioConfig())
    print(f"wrote {args.out}: {counts['train']} training and {counts['eval']} evaluation utterances")


if __name__ == "__main__":
    main()
