"""What our offline Kokoro frontend (espeak-ng IPA mapped to misaki's symbols) loses against misaki's own
English G2P, on the same normalised sentences.

    python benchmarks/kokoro_g2p.py [--out benchmarks/results/kokoro_g2p.json]

misaki cannot run as Kokoro runs it here: `misaki.en.G2P` loads spaCy's `en_core_web_sm`, which is not on
PyPI and cannot be downloaded on these machines. What can run is misaki with a blank spaCy English pipeline
(tokenizer only, no tagger or parser) and no fallback: its lexicons (gold and silver dictionaries), its
suffix and compound rules, without part-of-speech choices (heteronyms such as "read" or "live" take
their untagged reading, and misaki drops punctuation it cannot tag). That is the reference here, so the
figures bound what a dictionary would add, not exactly what Kokoro's own pipeline says.

Per sentence, both phoneme strings with punctuation removed are compared: the phoneme error rate is the
edit distance over misaki's length (with and without stress marks), and where both have the same number of
words, each word is compared whole. Words misaki does not know (its `❓`) are counted apart.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from tts_neuron.frontend import prepare_text
from tts_neuron.frontend.kokoro import PUNCTUATION, kokoro_phonemes
from tts_neuron.frontend.sentences import split_sentences

REPO = Path(__file__).resolve().parent.parent
ARTICLE = REPO.parent / "shared" / "seed" / "framework-article.txt"
STRESS = "ˈˌ"
UNKNOWN = "❓"


def misaki_g2p() -> Any:
    """misaki's English G2P on a blank spaCy pipeline (the tagger's model cannot be installed here)."""
    import spacy
    from misaki import en

    blank = spacy.blank("en")
    spacy.util.is_package = lambda name: True  # type: ignore[assignment]
    spacy.load = lambda name, **kwargs: blank  # type: ignore[assignment]
    return en.G2P(trf=False, british=False, fallback=None, unk=UNKNOWN)


def sentences(limit: int) -> list[str]:
    """The hard sentences of benchmarks/ and prose from the seed article, normalised as the frontend does."""
    hard = [
        line
        for line in (REPO / "benchmarks" / "hard_sentences.txt").read_text("utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    prose = list(split_sentences(ARTICLE.read_text("utf-8"))) if ARTICLE.is_file() else []
    chosen = [prepare_text(s) for s in hard + prose if len(s.split()) >= 4]
    return chosen[:limit]


def words(phonemes: str, stress: bool = True) -> list[str]:
    cleaned = re.sub(f"[{re.escape(PUNCTUATION)}]", " ", phonemes)
    if not stress:
        cleaned = re.sub(f"[{STRESS}]", "", cleaned)
    return cleaned.split()


def distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "kokoro_g2p.json")
    args = parser.parse_args()
    g2p = misaki_g2p()
    totals: Counter[str] = Counter()
    differing: Counter[tuple[str, str, str]] = Counter()
    texts = sentences(args.sentences)
    for text in texts:
        ours, (theirs, _) = kokoro_phonemes(text), g2p(text)
        for stress in (True, False):
            a, b = " ".join(words(ours, stress)), " ".join(words(theirs, stress))
            key = "stress" if stress else "no_stress"
            totals[f"edits_{key}"] += distance(a, b)
            totals[f"length_{key}"] += len(b)
        ours_words, their_words = words(ours), words(theirs)
        if len(ours_words) != len(their_words):
            totals["sentences_word_count_differs"] += 1
            continue
        for spoken, mine, reference in zip(text.split(), ours_words, their_words, strict=False):
            if UNKNOWN in reference:
                totals["words_misaki_unknown"] += 1
                continue
            totals["words"] += 1
            totals["words_equal"] += mine == reference
            totals["words_equal_no_stress"] += re.sub(f"[{STRESS}]", "", mine) == re.sub(
                f"[{STRESS}]", "", reference
            )
            if mine != reference:
                differing[(spoken.strip(PUNCTUATION).lower(), mine, reference)] += 1
    result: dict[str, Any] = {
        "sentences": len(texts),
        "reference": "misaki 0.9.4 G2P on a blank spaCy English pipeline (no tagger), no fallback",
        "phoneme_error_rate": totals["edits_stress"] / max(totals["length_stress"], 1),
        "phoneme_error_rate_without_stress": totals["edits_no_stress"] / max(totals["length_no_stress"], 1),
        "words_compared": totals["words"],
        "words_equal": totals["words_equal"] / max(totals["words"], 1),
        "words_equal_without_stress": totals["words_equal_no_stress"] / max(totals["words"], 1),
        "words_misaki_unknown": totals["words_misaki_unknown"],
        "sentences_word_count_differs": totals["sentences_word_count_differs"],
        "most_common_differences": [
            {"word": w, "ours": o, "misaki": m, "count": n} for (w, o, m), n in differing.most_common(25)
        ],
        "command": "python benchmarks/kokoro_g2p.py",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "most_common_differences"}, indent=1))
    for row in result["most_common_differences"][:12]:
        print(f"  {row['word']:>14}  ours {row['ours']:<14} misaki {row['misaki']:<14} x{row['count']}")


if __name__ == "__main__":
    main()
