"""The robustness benchmark's own code: word alignment, the hard sentence set, and a tiny run in which an
attention voice that cannot align is counted, not crashed on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import each other as their folder's modules

import robustness  # noqa: E402
from intelligibility import normalise_words, word_errors  # noqa: E402

from tts_neuron.frontend.normalize import normalize  # noqa: E402

WORDS = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=12)


@settings(max_examples=300, deadline=None)
@given(reference=WORDS, hypothesis=WORDS)
def test_alignment_classifies_exactly_the_edit_distance(reference: list[str], hypothesis: list[str]) -> None:
    edits = robustness.align(reference, hypothesis)
    assert edits.substitutions + edits.deletions + edits.insertions == word_errors(reference, hypothesis)
    assert edits.deletions - edits.insertions == len(reference) - len(hypothesis)
    assert 0 <= edits.repeats <= edits.insertions


def test_alignment_names_skips_and_repeats() -> None:
    assert robustness.align(["the", "cat", "sat"], ["the", "sat"]) == robustness.Edits(deletions=1)
    repeated = robustness.align(["the", "cat", "sat"], ["the", "cat", "cat", "sat"])
    assert repeated == robustness.Edits(insertions=1, repeats=1)
    assert robustness.align(["a", "b"], ["a", "c"]) == robustness.Edits(substitutions=1)


def test_the_hard_sentences_cover_what_the_literature_finds_hard() -> None:
    hard = robustness.read_hard_sentences(robustness.HARD_SENTENCES)
    categories = {category for category, _ in hard}
    assert {"repeated words", "long lists", "numbers", "tongue twisters", "long sentences"} <= categories
    lengths = [len(normalise_words(normalize(text))) for _, text in hard]
    assert min(lengths) >= 10 and max(lengths) <= 80
    assert sum(n >= 60 for n in lengths) >= 3


def test_a_tiny_run_counts_guard_stops(tiny_addon_dir: Path, tiny_tacotron_dir: Path, tmp_path: Path) -> None:
    sentences = tmp_path / "hard.txt"
    sentences.write_text("## repeats\nThe dog barked and barked and barked at the cat all night long.\n")
    argv = ["--addons", str(tiny_addon_dir), str(tiny_tacotron_dir), "--sentences", str(sentences)]
    assert robustness.main([*argv, "--seeds", "1", "--jobs", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "robustness.json").read_text())
    systems = report["systems"]
    assert set(systems) == {"espeak-ng", "tiny", "tiny-tacotron"}
    assert systems["tiny-tacotron"]["guard_stops"] == 1 and systems["tiny"]["guard_stops"] == 0
    (sentence,) = report["per_sentence"]
    assert "attention" in sentence["failures"]["tiny-tacotron"]
    assert (
        "| sentences stopped by the attention guards | | 0 / 1 | 1 / 1 |"
        in (tmp_path / "robustness.md").read_text()
    )
