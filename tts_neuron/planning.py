"""Bucket planning from real text: which fixed sizes to compile so that little of the work is padding.

    tts-neuron plan-buckets --addon DIR --text-file FILE [--max-buckets K] [--write]

A fixed-shape target computes every position of a bucket, real or padded, so buckets chosen by hand
(powers of two) waste a third of the encoders' work. The planner runs the text through the voice's own
frontend and the runtime's own splitting and windowing, collects the lengths each network is really
called at, and picks the K buckets that minimise padded positions with an exact dynamic programme.

Two kinds of network take buckets:
- token networks (encoders, the attention decoder's step) are called once per sentence piece, padded to
  the smallest bucket that holds it; pieces are cut at the largest bucket (`sentence_pieces`);
- window networks (PaddedDecoder, PaddedVocoder) decode windows of a core plus `receptive_radius` frames
  of halo each side: the first core is the smallest bucket's, later ones the largest's, and only an
  utterance's last window is shorter. Their smallest and largest buckets are latency and throughput
  choices, so a plan keeps them and only places buckets between them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from tts_neuron.addon import MAX_SIZE, Addon, load_addon
from tts_neuron.backends.executor import BucketTable
from tts_neuron.blocks.acoustic import Encoder, Encoders, Upsampler, durations_to_frames
from tts_neuron.blocks.base import Chunk
from tts_neuron.blocks.pieces import pause_ids, sentence_pieces
from tts_neuron.blocks.windows import bucket_cores, windows
from tts_neuron.errors import AddonError
from tts_neuron.frontend import Frontend, Sentence
from tts_neuron.frontend.espeak import Espeak
from tts_neuron.models.protocols import AttentionStepNetwork, WindowedNetwork

MAX_PLANNED_BUCKETS = 32


def padded_positions(counts: Mapping[int, int], buckets: Sequence[int]) -> int:
    """Positions computed beyond the requested lengths when each length is padded to its bucket."""
    table = BucketTable(list(buckets))
    total = 0
    for length, count in counts.items():
        bucket = table.bucket_for(length)
        if bucket is None:
            raise ValueError(f"length {length} fits no bucket of {list(buckets)}")
        total += count * (bucket - length)
    return total


def plan_buckets(counts: Mapping[int, int], k: int, keep: Iterable[int] = ()) -> list[int]:
    """The at most `k` buckets that minimise padded positions over `counts` (length -> occurrences).

    Exact: an optimal bucket always sits at an observed length (lowering it to the longest length it
    holds pads less), so with the distinct lengths sorted, each bucket closes a run of consecutive
    lengths and a dynamic programme over (buckets used, last length covered) finds the optimum in
    O(k m^2) for m distinct lengths. The largest bucket is the largest length. Lengths in `keep` must
    be buckets (they count as observed, with no occurrences); ties go to fewer buckets.
    """
    keep = set(keep)
    if not counts:
        raise ValueError("no lengths to plan buckets for")
    values = sorted(set(counts) | keep)  # v[0] < ... < v[m-1]
    required = len(keep | {values[-1]})
    if k < required:
        raise ValueError(f"need at least {required} buckets to keep {sorted(keep)}, got {k}")
    m = len(values)
    n_before = [0] * (m + 1)  # occurrences of v[0..j-1]
    sum_before = [0] * (m + 1)  # their total length
    for j, v in enumerate(values):
        c = counts.get(v, 0)
        n_before[j + 1] = n_before[j] + c
        sum_before[j + 1] = sum_before[j] + c * v
    kept_before = [0] * (m + 1)  # kept values among v[0..j-1]
    for j, v in enumerate(values):
        kept_before[j + 1] = kept_before[j] + (v in keep)

    def cost(i: int, j: int) -> int:
        """Padding of v[i..j] in one bucket v[j]."""
        return values[j] * (n_before[j + 1] - n_before[i]) - (sum_before[j + 1] - sum_before[i])

    def skips_kept(i: int, j: int) -> bool:
        """Whether a bucket at v[j] covering from v[i] would leave a kept value inside, not a bucket."""
        return kept_before[j] - kept_before[i] > 0

    inf = float("inf")
    # best[b][j]: least padding of v[0..j] with b buckets, the last at v[j]; back[b][j]: start of that run
    best = [[inf] * m for _ in range(k + 1)]
    back = [[0] * m for _ in range(k + 1)]
    for j in range(m):
        if not skips_kept(0, j):
            best[1][j] = cost(0, j)
    for b in range(2, k + 1):
        for j in range(m):
            for i in range(1, j + 1):  # the last bucket covers v[i..j]
                if best[b - 1][i - 1] == inf or skips_kept(i, j):
                    continue
                total = best[b - 1][i - 1] + cost(i, j)
                if total < best[b][j]:
                    best[b][j], back[b][j] = total, i
    used = min(range(1, k + 1), key=lambda b: (best[b][m - 1], b))
    buckets, j = [], m - 1
    for b in range(used, 0, -1):
        buckets.append(values[j])
        j = back[b][j] - 1
    return buckets[::-1]


@dataclass
class Calls:
    """What one group of networks is called at: requested lengths and the real positions within them."""

    names: list[str]
    kind: str
    """"tokens" or "windows"."""
    buckets: list[int]
    requests: Counter[int] = field(default_factory=Counter)
    """Requested length (piece tokens, or window core + 2 * halo) -> calls."""
    real: int = 0
    """Positions that hold data (a window at an utterance's edge lacks part of its halo: masked)."""
    halo: int = 0
    """Window positions that are context recomputed for the core, not output."""
    split_sentences: int = 0
    """Sentences longer than the largest token bucket, cut into pieces at it."""
    radius: int = 0
    limit: int = 0
    """Tokens a sentence piece may have (where longer sentences were cut)."""

    def computed(self, buckets: Sequence[int]) -> int:
        """Positions the calls compute at these buckets: every bucket whole."""
        return sum(c * r for r, c in self.requests.items()) + padded_positions(self.requests, buckets)

    def padding_share(self, buckets: Sequence[int]) -> float:
        """Share of computed positions that are padding (masked), at these buckets."""
        computed = self.computed(buckets)
        return 1 - self.real / computed if computed else 0.0

    def keep(self) -> list[int]:
        """Buckets a plan must keep: a window network's smallest and largest set its chunk sizes."""
        return [self.buckets[0], self.buckets[-1]] if self.kind == "windows" else []

    def plan(self, k: int) -> list[int]:
        if self.kind == "windows":
            # Windows shorter than the smallest bucket go to it: no bucket may be smaller (the first core).
            lowest = self.buckets[0]
            clamped: Counter[int] = Counter()
            for length, count in self.requests.items():
                clamped[max(length, lowest)] += count
            return plan_buckets(clamped, max(k, 2), self.keep())
        return plan_buckets(self.requests, k)


@dataclass
class Observations:
    addon: Addon
    sentences: int
    groups: list[Calls]
    frames_source: str
    """Where utterance lengths in frames came from (the duration model, or espeak-ng's timing)."""


def _group_networks(addon: Addon) -> list[Calls]:
    """Networks with buckets, grouped as the runtime calls them: all encoders together (NeuronEncoders
    pads one piece for all of them), then each network alone by the Protocol it meets
    (`tts_neuron.models.protocols`): windows of frames, or sentence pieces for an attention step."""
    groups: list[Calls] = []
    encoders = [spec for spec in addon.networks_with_role("encoder") if spec.buckets]
    if encoders:
        if len({tuple(spec.buckets) for spec in encoders}) != 1:
            raise AddonError(f"{addon.config_path}: all encoder networks need the same buckets")
        groups.append(Calls([spec.name for spec in encoders], "tokens", list(encoders[0].buckets)))
    for spec in addon.networks.values():
        if spec.role == "encoder" or not spec.buckets:
            continue
        network = addon.network(spec.name)
        if isinstance(network, WindowedNetwork):
            groups.append(Calls([spec.name], "windows", list(spec.buckets), radius=network.receptive_radius))
        elif isinstance(network, AttentionStepNetwork):  # called per sentence piece, like the encoders
            groups.append(Calls([spec.name], "tokens", list(spec.buckets)))
    return groups


def _features(sentence: Sentence) -> dict[str, torch.Tensor]:
    tokens = torch.tensor([sentence.tokens], dtype=torch.long)  # [1, N]
    return {
        "tokens": tokens,
        "token_mask": torch.ones_like(tokens, dtype=torch.float32),
        "words": torch.tensor([sentence.words], dtype=torch.long),
    }


class _FrameCounter:
    """Frames of an utterance: from the duration model (a duration voice), else from espeak-ng's own
    timing, which the attention voice was trained to follow (its own length is known only by running
    its decoder step by step)."""

    def __init__(self, addon: Addon) -> None:
        self.addon = addon
        specs = addon.networks_with_role("encoder")
        upsampler = Upsampler()
        self.length_scale, self.max_frames = upsampler.length_scale, upsampler.max_frames_per_phoneme
        self.durations = upsampler.durations_key
        self.encoders: Encoders | None = None
        self.reduction = 1
        if any(self.durations in spec.outputs for spec in specs):
            blocks = [Encoder(s.name, addon.network(s.name), s.inputs, s.outputs) for s in specs]
            self.encoders = Encoders(blocks, pause_ids(addon.symbols))
        else:
            for spec in addon.networks_with_role("decoder"):
                step = addon.network(spec.name)
                if isinstance(step, AttentionStepNetwork):
                    self.reduction = max(self.reduction, step.reduction)

    @property
    def source(self) -> str:
        if self.encoders is not None:
            return "the voice's duration predictor"
        return "espeak-ng's timing (the teacher's), not the attention decoder's own"

    def frames(self, sentence: Sentence, features: dict[str, torch.Tensor]) -> int:
        if self.encoders is not None:
            log_durations = self.encoders(features)[self.durations][0]  # [N]
            return int(durations_to_frames(log_durations, self.length_scale, self.max_frames).sum())
        audio = Espeak.get().synthesize(sentence.text, self.addon.language).audio
        frames = len(audio) // self.addon.audio.hop_length + 1
        return -(-frames // self.reduction) * self.reduction  # the decoder makes `reduction` a step


def _observe_windows(calls: Calls, n_frames: int) -> None:
    """The windows PaddedDecoder/PaddedVocoder make of an utterance of `n_frames` frames (by the
    runtime's own window loop)."""
    first_core, core = bucket_cores(calls.buckets, calls.radius)
    chunk = Chunk(torch.zeros(n_frames, 1), 0, True)  # frames: [T, 1]; only their count matters
    for window in windows(iter([chunk]), calls.radius, core, first_core):
        calls.requests[window.stop - window.start + 2 * calls.radius] += 1
        calls.real += window.hi - window.lo
        calls.halo += (window.hi - window.lo) - (window.stop - window.start)


def observe(
    addon_dir: str | Path, text: str, max_tokens: int | None = None, progress: bool = True
) -> Observations:
    """Run the text through the voice's frontend (and duration model) and record every call's length.

    Sentence pieces are cut at `max_tokens` (default: each network's largest bucket, as the runtime cuts
    them); a plan's largest bucket is then its longest piece, at which the runtime cuts the same pieces."""
    if max_tokens is not None and not 1 <= max_tokens <= MAX_SIZE:
        raise ValueError(f"max_tokens must be from 1 to {MAX_SIZE}, got {max_tokens}")
    addon = load_addon(addon_dir)
    groups = _group_networks(addon)
    if not groups:
        raise AddonError(f"{addon.config_path}: no network declares buckets, so there is nothing to plan")
    frontend = Frontend(addon.symbols, addon.language, max_speech_seconds=None)  # a corpus, not a request
    pauses = pause_ids(addon.symbols)
    counter = _FrameCounter(addon) if any(g.kind == "windows" for g in groups) else None
    sentences = 0
    with torch.inference_mode():
        for sentence in tqdm(frontend.sentences(text), desc="plan", unit=" sentences", disable=not progress):
            sentences += 1
            features = _features(sentence)
            n_frames = counter.frames(sentence, features) if counter else 0
            for calls in groups:
                if calls.kind == "tokens":
                    calls.limit = max_tokens or calls.buckets[-1]
                    pieces = sentence_pieces(features, calls.limit, pauses)
                    calls.split_sentences += len(pieces) > 1
                    for a, b in pieces:
                        calls.requests[b - a] += 1
                        calls.real += b - a
                elif n_frames:
                    _observe_windows(calls, n_frames)
    return Observations(addon, sentences, groups, counter.source if counter else "")


def _indent_of(raw: str) -> int | None:
    """The indent json.dumps wrote the file with (None: one line)."""
    match = re.search(r"\n( +)\S", raw)
    return len(match.group(1)) if match else None


def write_buckets(addon: Addon, plans: Mapping[str, list[int]]) -> None:
    """Set networks.<name>.buckets in addon.json, keeping its indent; compiled artifacts become stale."""
    path = addon.config_path
    raw = path.read_text(encoding="utf-8")
    config = json.loads(raw)
    for name, buckets in plans.items():
        config["networks"][name]["buckets"] = buckets
    text = json.dumps(config, indent=_indent_of(raw), ensure_ascii=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + ("\n" if raw.endswith("\n") else ""), encoding="utf-8")
    tmp.replace(path)
    load_addon(addon.root)  # what was written still validates


def report(observations: Observations, max_buckets: int) -> Iterator[str]:
    """Lines of the plan: per group, its calls, the padding share now and planned, and per K."""
    yield f"{observations.addon.name}: {observations.sentences:,} sentences"
    for calls in observations.groups:
        names = ", ".join(calls.names)
        calls_n = sum(calls.requests.values())
        if not calls_n:
            yield f"\n{names}: never called by this text"
            continue
        lo, hi = min(calls.requests), max(calls.requests)
        if calls.kind == "tokens":
            yield f"\n{names} (token buckets): {calls_n:,} sentence pieces of {lo} to {hi} tokens"
            if calls.split_sentences:
                yield (
                    f"  {calls.split_sentences:,} sentences are longer than {calls.limit} tokens and are "
                    "split into pieces (after a pause, else between words)"
                )
        else:
            computed = calls.computed(calls.buckets)
            yield (
                f"\n{names} (windows of a core + {calls.radius} frames of halo each side; frames from "
                f"{observations.frames_source}): {calls_n:,} windows asking {lo} to {hi} frames; "
                f"halo {calls.halo / computed:.1%} of computed positions at the current buckets"
            )
            yield (
                f"  a plan keeps {calls.buckets[0]} and {calls.buckets[-1]}: they set the first and later "
                "cores (time to first audio, halo overhead)"
            )
        if hi > calls.buckets[-1]:
            yield f"  current {calls.buckets}: cannot hold pieces of {hi} tokens (they are split today)"
        else:
            yield f"  current {calls.buckets}: padding {calls.padding_share(calls.buckets):.1%}"
        planned = calls.plan(max_buckets)
        yield f"  plan    {planned}: padding {calls.padding_share(planned):.1%}"
        yield "  K  padding  buckets"
        lowest_k = len(calls.keep()) or 1
        for k in range(lowest_k, max_buckets + 1):
            plan = calls.plan(k)
            yield f"  {k:<2} {calls.padding_share(plan):>6.1%}   {plan}"
            if len(plan) < k:  # no more distinct lengths to place buckets at
                break


def token_plans(observations: Observations, max_buckets: int) -> dict[str, list[int]]:
    """The buckets --write sets: every token network's plan. Window buckets are left as they are: their
    ends are latency choices, and the report shows what buckets between them would buy."""
    return {
        name: calls.plan(max_buckets)
        for calls in observations.groups
        if calls.kind == "tokens" and calls.requests
        for name in calls.names
    }
