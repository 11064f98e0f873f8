"""Bucket planning: the dynamic programme is optimal, the lengths are the ones the runtime really calls
networks at, and --write changes only the buckets of addon.json."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import COVERAGE_TEXT
from tts_neuron import planning
from tts_neuron.addon import load_addon
from tts_neuron.backends.executor import BucketTable
from tts_neuron.blocks.base import Chunk
from tts_neuron.blocks.fixed import PaddedDecoder
from tts_neuron.cli import main
from tts_neuron.errors import TextError
from tts_neuron.frontend import MAX_SPEECH_SECONDS, Frontend, Sentence
from tts_neuron.planning import Calls, _observe_windows, observe, padded_positions, plan_buckets

LENGTHS = st.dictionaries(st.integers(1, 40), st.integers(1, 5), min_size=1, max_size=7)
LONG_SENTENCE = (
    "When the committee finally met, after a long and tiring journey across the northern hills, "
    "it discussed the budget, the schedule, the staff and the future of every single project."
)


def brute_force(counts: dict[int, int], k: int, keep: set[int] = frozenset()) -> int:  # type: ignore[assignment]
    """The least padding over every set of at most k buckets drawn from the lengths (and kept values)."""
    values = sorted(set(counts) | keep)
    best = None
    for size in range(1, k + 1):
        for buckets in itertools.combinations(values, size):
            if values[-1] not in buckets or not keep <= set(buckets):
                continue
            padding = padded_positions(counts, buckets)
            best = padding if best is None else min(best, padding)
    assert best is not None
    return best


@settings(max_examples=150, deadline=None)
@given(counts=LENGTHS, k=st.integers(1, 4))
def test_plan_is_optimal_against_brute_force(counts: dict[int, int], k: int) -> None:
    plan = plan_buckets(counts, k)
    assert len(plan) <= k and plan == sorted(set(plan))
    assert padded_positions(counts, plan) == brute_force(counts, k)


@settings(max_examples=100, deadline=None)
@given(counts=LENGTHS, k=st.integers(2, 4), data=st.data())
def test_plan_keeps_what_it_must_and_stays_optimal(
    counts: dict[int, int], k: int, data: st.DataObject
) -> None:
    keep = set(data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=2)))
    k = max(k, len(keep | {max(counts)}))
    plan = plan_buckets(counts, k, keep)
    assert keep <= set(plan)
    assert padded_positions(counts, plan) == brute_force(counts, k, keep)


@settings(max_examples=100, deadline=None)
@given(counts=LENGTHS, k=st.integers(1, 6))
def test_every_length_fits_and_more_buckets_are_never_worse(counts: dict[int, int], k: int) -> None:
    plan = plan_buckets(counts, k)
    table = BucketTable(plan)
    assert all(table.bucket_for(length) is not None for length in counts)
    assert plan[-1] == max(counts) and set(plan) <= set(counts)
    if k > 1:
        assert padded_positions(counts, plan) <= padded_positions(counts, plan_buckets(counts, k - 1))


def test_plan_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="no lengths"):
        plan_buckets({}, 3)
    with pytest.raises(ValueError, match="at least 2"):
        plan_buckets({5: 1}, 1, keep={3, 9})


def test_window_plan_keeps_both_ends_and_nothing_below_the_smallest() -> None:
    calls = Calls(["decoder"], "windows", [40, 88], Counter({20: 3, 40: 5, 55: 2, 70: 4, 88: 9}), real=0)
    for k in range(1, 6):
        plan = calls.plan(k)
        assert plan[0] == 40 and plan[-1] == 88 and len(plan) <= max(k, 2)


@pytest.mark.parametrize("n_frames", [1, 20, 39, 64, 65, 200, 333])
def test_window_lengths_are_the_ones_padded_decoder_calls(n_frames: int) -> None:
    """The planner's windows are the runtime's: PaddedDecoder with a recording network asks for the
    same buckets, as often."""
    radius, buckets = 5, [16, 24, 40]
    called: list[int] = []

    def network(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        called.append(x.shape[1])  # x: [1, bucket, C]
        return x

    decoder = PaddedDecoder("decoder", network, radius, table=BucketTable(buckets))
    frames = torch.randn(n_frames, 3)
    out = torch.cat([c.data for c in decoder.stream(iter([Chunk(frames, 0, True)]), {})])
    assert torch.equal(out, frames)
    calls = Calls(["decoder"], "windows", buckets, radius=radius)
    _observe_windows(calls, n_frames)
    table = BucketTable(buckets)
    planned: Counter[int | None] = Counter()
    for request, count in calls.requests.items():
        planned[table.bucket_for(request)] += count
    assert planned == Counter(called)
    assert calls.real - calls.halo == n_frames  # every frame is in exactly one core


def test_observe_counts_every_token_and_splits_at_the_largest_bucket(
    tiny_addon_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Observe's counts are those of the very sentences its frontend yields (recorded as it runs)."""
    sentences: list[Sentence] = []

    class Recording(Frontend):
        def sentences(self, text: str, ssml: bool | None = None) -> Iterator[Sentence]:
            for sentence in super().sentences(text, ssml):
                sentences.append(sentence)
                yield sentence

    monkeypatch.setattr(planning, "Frontend", Recording)
    text = " ".join([*COVERAGE_TEXT, LONG_SENTENCE])
    observations = observe(tiny_addon_dir, text, progress=False)
    encoders, *windows = observations.groups
    assert encoders.names == ["text_encoder", "duration_predictor"] and encoders.kind == "tokens"
    assert observations.sentences == len(sentences)
    assert encoders.real == sum(len(s.tokens) for s in sentences)
    assert max(encoders.requests) <= encoders.buckets[-1] == 48
    assert encoders.split_sentences == sum(len(s.tokens) > 48 for s in sentences) >= 1
    assert {g.kind for g in windows} == {"windows"} and all(g.requests for g in windows)
    assert observations.frames_source == "the voice's duration predictor"


def test_max_tokens_moves_the_cut(tiny_addon_dir: Path) -> None:
    observations = observe(tiny_addon_dir, LONG_SENTENCE, max_tokens=20, progress=False)
    encoders = observations.groups[0]
    assert max(encoders.requests) <= 20 and sum(encoders.requests.values()) >= 3
    assert encoders.split_sentences == 1


def test_write_sets_the_token_buckets_and_nothing_else(addon_copy: Path, tmp_path: Path) -> None:
    text_file = tmp_path / "text.txt"
    text_file.write_text("\n".join([*COVERAGE_TEXT, LONG_SENTENCE]), encoding="utf-8")
    before = json.loads((addon_copy / "addon.json").read_text())
    argv = ["plan-buckets", "--addon", str(addon_copy), "--text-file", str(text_file), "--max-buckets", "3"]
    assert main([*argv, "--write"]) == 0
    raw = (addon_copy / "addon.json").read_text()
    after = json.loads(raw)
    assert raw == json.dumps(after, indent=2) + "\n"  # the file's own formatting
    observations = observe(addon_copy, text_file.read_text(), progress=False)
    encoders = observations.groups[0]
    assert after["networks"]["text_encoder"]["buckets"] == encoders.buckets
    assert after["networks"]["duration_predictor"]["buckets"] == encoders.buckets
    assert len(encoders.buckets) <= 3 and encoders.buckets != before["networks"]["text_encoder"]["buckets"]
    for name in ("decoder", "vocoder"):
        assert after["networks"][name] == before["networks"][name]
    assert {k: v for k, v in after.items() if k != "networks"} == {
        k: v for k, v in before.items() if k != "networks"
    }
    # planning again from the same text finds nothing left to gain at 3 buckets
    assert encoders.plan(3) == encoders.buckets


def test_plan_buckets_prints_the_current_and_planned_share(
    tiny_addon_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text_file = tmp_path / "text.txt"
    text_file.write_text(" ".join(COVERAGE_TEXT), encoding="utf-8")
    assert main(["plan-buckets", "--addon", str(tiny_addon_dir), "--text-file", str(text_file)]) == 0
    out = capsys.readouterr().out
    assert "current [8, 16, 48]: padding" in out and "plan    [" in out
    assert "text_encoder, duration_predictor (token buckets)" in out and "K  padding  buckets" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-buckets", "0"], "--max-buckets must be from 1 to 32"),
        (["--max-tokens", "0"], "max_tokens must be from 1"),
    ],
)
def test_plan_buckets_bad_input_is_one_line_and_exit_2(
    tiny_addon_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    text_file = tmp_path / "text.txt"
    text_file.write_text("Hello there.", encoding="utf-8")
    argv = ["plan-buckets", "--addon", str(tiny_addon_dir), "--text-file", str(text_file), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_plan_buckets_refuses_a_missing_text_file(
    tiny_addon_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan-buckets", "--addon", str(tiny_addon_dir), "--text-file", "/no/such.txt"]) == 2
    assert "text file not found" in capsys.readouterr().err


def test_a_corpus_longer_than_one_requests_speech_limit_is_planned(tiny_addon_dir: Path) -> None:
    """The frontend refuses a request of over 10 minutes of speech; a planning corpus is not a request."""
    text = " ".join(COVERAGE_TEXT * 50)
    frontend = Frontend(load_addon(tiny_addon_dir).symbols, max_speech_seconds=MAX_SPEECH_SECONDS)
    with pytest.raises(TextError, match="minutes of speech"):
        list(frontend.sentences(text))
    per_copy = len(list(frontend.sentences(" ".join(COVERAGE_TEXT))))
    assert observe(tiny_addon_dir, text, progress=False).sentences == 50 * per_copy
