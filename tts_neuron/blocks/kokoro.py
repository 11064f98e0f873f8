"""Blocks of imported Kokoro models: styled encoders, then a decoder that runs a whole sentence at once.

Kokoro's frame side has no finite receptive field (instance norms and a bi-LSTM over every frame, the
harmonic source's running phase), so it cannot be windowed: `SentenceDecoder` decodes each piece of a
sentence whole (on an accelerator padded to the smallest frame-count bucket that holds it, the audio cut
after, so streams batch; on a CPU at its own length). A
sentence longer than the encoders' largest token bucket is cut into pieces first (after a punctuation
mark, else between words), each spoken as a sentence of its own, as Kokoro's own pipeline does; so audio
streams piece by piece.

- `StyledEncoders` picks the voice's style row (by each piece's phoneme count, from the call's speaker or
  blend), wraps each piece in Kokoro's 0 ids, and runs the token side (`KokoroEncoders`).
- `SentenceDecoder` rounds the durations (divided by the call's rate), repeats each token's features for
  its frames on the host, draws the harmonic source's random inputs from the call's seed, and runs the
  frame side (`KokoroDecoder`).
- `NeuronStyledEncoders` and `PaddedSentenceDecoder` are the same on compiled networks: every call at a
  compiled bucket; a piece whose frames pass the largest frame bucket is decoded in parts of whole words.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import torch

from tts_neuron.backends.executor import BucketTable, pad_length
from tts_neuron.blocks.acoustic import upsample
from tts_neuron.blocks.base import Chunk, Features, SequenceBlock, StreamableBlock, construct
from tts_neuron.blocks.context import BuildContext
from tts_neuron.blocks.pieces import sentence_pieces
from tts_neuron.errors import StackError
from tts_neuron.frontend.kokoro import PUNCTUATION
from tts_neuron.models.kokoro import source_noise

PIECE_KEYS = ("durations", "prosody", "text_features")
"""The token side's outputs, one row per token of every piece (each piece with its two 0 ids)."""


def _table(ctx: BuildContext, name: str, compiled: bool) -> BucketTable | None:
    """A network's buckets: needed for compiled calls, used on dynamic ones to meet at a few shapes."""
    buckets = ctx.addon.networks[name].buckets
    if compiled and not buckets:
        raise StackError(f"{ctx.path}: network '{name}' declares no buckets to compile in addon.json")
    return BucketTable(buckets) if buckets else None


def _check_network(ctx: BuildContext, name: str, architecture: str) -> None:
    spec = ctx.addon.networks.get(name)
    if spec is None or spec.architecture != architecture:
        raise StackError(f"{ctx.path}: the addon has no {architecture} network named '{name}'")


def call_speaker(features: Features, speakers: int) -> torch.Tensor:
    """The call's speaker as weights over the voice packs [V]: `speaker_weights` (a blend), else the
    `speaker` id, else the default (the first)."""
    if "speaker_weights" in features:
        return features["speaker_weights"].reshape(-1).float()
    weights = torch.zeros(speakers)
    weights[int(features["speaker"]) if "speaker" in features else 0] = 1.0
    return weights


def call_seed(features: Features) -> int:
    """The seed the sentence's random inputs come from: the call's `seed` feature, else fresh entropy."""
    return int(features["seed"]) if "seed" in features else secrets.randbits(63)


class StyledEncoders(SequenceBlock):
    """The token side of a Kokoro sentence: its pieces, each with its style row and Kokoro's 0 ids at both
    ends, encoded (padded to a token bucket when one holds it). Adds `durations` [1, M], `prosody`
    [1, M, C + S], `text_features` [1, M, C] (M: the pieces' tokens, 0 ids included), `piece_tokens`
    [P] and `styles` [P, 2S]."""

    blends_speakers = True
    """Takes a call's `speaker_weights` (a blend such as `af_bella+af_sky`): the packs' rows averaged."""

    def __init__(
        self,
        network: Callable[..., Any],
        voices: Callable[[torch.Tensor, int], torch.Tensor],
        speakers: int,
        pauses: set[int],
        table: BucketTable | None = None,
        max_tokens: int | None = None,
    ) -> None:
        """`max_tokens` bounds a piece with its two 0 ids (at most the largest token bucket)."""
        limits = [n for n in (max_tokens, table.largest if table else None) if n is not None]
        self.max_tokens = min(limits) if limits else None
        if self.max_tokens is not None and self.max_tokens < 3:
            raise ValueError(f"max_tokens must leave room for a phoneme and two 0 ids, got {self.max_tokens}")
        self.network, self.voices, self.speakers = network, voices, speakers
        self.pauses, self.table = pauses, table

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> StyledEncoders:
        name, voices = params.pop("network", "encoders"), params.pop("voices", "voices")
        _check_network(ctx, name, "KokoroEncoders")
        _check_network(ctx, voices, "KokoroVoices")
        compiled = cls is NeuronStyledEncoders
        return construct(
            cls,
            params,
            ctx.path,
            network=ctx.compiled(name) if compiled else ctx.network(name),
            voices=ctx.addon.network(voices),  # a row lookup on the host, never compiled
            speakers=max(len(ctx.addon.speakers), 1),
            pauses={i for i, symbol in enumerate(ctx.addon.symbols) if symbol in PUNCTUATION},
            table=_table(ctx, name, compiled),
        )

    def __call__(self, features: Features) -> Features:
        tokens = features["tokens"]  # [1, N], without Kokoro's 0 ids
        limit = self.max_tokens - 2 if self.max_tokens else tokens.shape[1]
        weights = call_speaker(features, self.speakers)
        pieces, styles, sizes = [], [], []
        for start, stop in sentence_pieces(features, limit, self.pauses):
            with torch.inference_mode():
                style = self.voices(weights, stop - start)  # [1, 2S]
            ids = torch.nn.functional.pad(tokens[:, start:stop], (1, 1))  # [1, n + 2]
            pieces.append(self.encode(ids, style))
            styles.append(style)
            sizes.append(ids.shape[1])
        joined = {key: torch.cat([piece[i] for piece in pieces], dim=1) for i, key in enumerate(PIECE_KEYS)}
        return {**features, **joined, "piece_tokens": torch.tensor(sizes), "styles": torch.cat(styles)}

    def encode(self, ids: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One piece's token-side outputs, padded to the smallest bucket that holds it and cut back."""
        n = ids.shape[1]
        bucket = self.table.bucket_for(n) if self.table else None
        mask = torch.ones(1, bucket or n)
        if bucket is not None:
            ids, mask[:, n:] = pad_length(ids, bucket), 0.0
        with torch.inference_mode():
            outputs = self.network(ids.to(torch.int32), mask, style)
        return tuple(x[:, :n] for x in outputs)

    def describe(self) -> str:
        buckets = f"token buckets {self.table.buckets}" if self.table else "any length"
        return f"{type(self).__name__} ({buckets}, {self.speakers} voice packs)"


class NeuronStyledEncoders(StyledEncoders):
    """StyledEncoders on the compiled token side: every piece padded to a compiled token bucket."""

    compiles = "encoder"


class SentenceDecoder(StreamableBlock):
    """Each piece of a sentence decoded whole (F0, energy, decoder, harmonic source), in order, one audio
    chunk a piece; on an accelerator padded to the smallest frame bucket that holds it, so that calls of
    different streams meet at a few shapes and batch, and on a CPU at its own length."""

    takes_rate = True
    """Honours the `rate` feature: durations are divided by it, as Kokoro's `speed`."""

    def __init__(
        self, network: Callable[..., Any], samples_per_frame: int, table: BucketTable | None
    ) -> None:
        self.network, self.samples_per_frame, self.table = network, samples_per_frame, table

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> SentenceDecoder:
        name = params.pop("network", "decoder")
        _check_network(ctx, name, "KokoroDecoder")
        compiled = cls is PaddedSentenceDecoder
        network = ctx.compiled(name) if compiled else ctx.network(name)
        per_frame = ctx.addon.network(name).samples_per_frame
        # A dynamic CPU stack decodes each piece at its own length: a CPU row costs about the same alone as
        # in a batch, so padding frames only to meet other streams would cost a quarter more for nothing.
        table = _table(ctx, name, compiled) if compiled or ctx.device.type != "cpu" else None
        return construct(cls, params, ctx.path, network=network, samples_per_frame=per_frame, table=table)

    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        missing = [key for key in (*PIECE_KEYS, "piece_tokens", "styles") if key not in features]
        if missing:
            raise StackError(f"{type(self).__name__} needs features {missing} (from StyledEncoders)")
        return self._chunks(features)

    def _chunks(self, features: Features) -> Iterator[Chunk]:
        rate = float(features["rate"]) if "rate" in features else 1.0
        generator = torch.Generator().manual_seed(call_seed(features))
        parts = []
        start = 0
        for row, size in enumerate(features["piece_tokens"].tolist()):
            piece = [features[key][0, start : start + size] for key in PIECE_KEYS]  # [n], [n, C + S], [n, C]
            frames = torch.round(piece[0] / rate).clamp(min=1).long()  # Kokoro's rounding of its durations
            parts += [(*part, features["styles"][row : row + 1]) for part in self._parts(frames, *piece[1:])]
            start += size
        made = 0
        for i, (frames, prosody, text, style) in enumerate(parts):
            audio = self.decode(frames, prosody, text, style, generator)
            yield Chunk(audio, made, i == len(parts) - 1)
            made += len(audio)

    def _parts(
        self, frames: torch.Tensor, prosody: torch.Tensor, text: torch.Tensor
    ) -> list[tuple[torch.Tensor, ...]]:
        """A piece as one part or, when its frames pass the largest bucket, as runs of tokens that fit (a
        token longer than the largest bucket is shortened to it)."""
        if self.table is None or int(frames.sum()) <= self.table.largest:
            return [(frames, prosody, text)]
        frames = frames.clamp(max=self.table.largest)
        cuts, used = [0], 0
        for i, count in enumerate(frames.tolist()):
            if used + count > self.table.largest:
                cuts.append(i)
                used = 0
            used += count
        cuts.append(len(frames))
        return [(frames[a:b], prosody[a:b], text[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]

    def decode(
        self,
        frames: torch.Tensor,
        prosody: torch.Tensor,
        text: torch.Tensor,
        style: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """One part's audio [T * samples_per_frame]: token features repeated for their frames, padded to a
        bucket (the random inputs drawn for the real frames only, zero past them, so the audio does not
        depend on the bucket) and cut back."""
        ends = frames.cumsum(0)
        total = int(ends[-1])
        bucket = (self.table.bucket_for(total) if self.table else None) or total
        phase0, noise = source_noise(total, self.samples_per_frame, generator)
        inputs = (
            pad_length(torch.ones(1, total), bucket),
            pad_length(upsample(prosody, ends, 0, total)[None], bucket),  # [1, T, C + S]
            pad_length(upsample(text, ends, 0, total)[None], bucket),  # [1, T, C]
            style,
            phase0,
            torch.nn.functional.pad(noise, (0, (bucket - total) * self.samples_per_frame)),
        )
        with torch.inference_mode():
            audio = self.network(*inputs)  # [1, bucket * samples_per_frame]
        return audio[0, : total * self.samples_per_frame]

    def describe(self) -> str:
        buckets = f"frame buckets {self.table.buckets}" if self.table else "any length"
        return f"{type(self).__name__} (whole sentences, {buckets})"


class PaddedSentenceDecoder(SentenceDecoder):
    """SentenceDecoder on the compiled frame side: every piece at a compiled frame bucket."""

    compiles = "decoder"
