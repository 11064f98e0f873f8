"""An imported Piper voice against Piper's own ONNX Runtime, on the same sentences in the same run.

    python benchmarks/piper_compare.py VOICE.onnx [--imported DIR] [--sentences 20] [--threads 1] [--json F]

Both sides get the same phoneme ids (our Piper frontend's) and the voice's default noise settings. Per
sentence: time to first audio (TTFA) and total time. Piper's runtime speaks a sentence in one call, so its
TTFA is its total; ours is whole-sentence too until the voice runs as a streaming stack (docs/importing.md),
so the same holds for it. Frontend time is left out of both. Run it on a quiet machine: figures taken
while other work shares the cores are noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tts_neuron.importers.piper import ImportedVoice, import_voice

REPO = Path(__file__).resolve().parent.parent
TEXT = (REPO / "benchmarks" / "hard_sentences.txt").read_text("utf-8")


def compare(onnx_path: Path, imported: Path, n_sentences: int, threads: int) -> dict[str, object]:
    import onnxruntime as ort

    torch.set_num_threads(threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    voice = ImportedVoice(imported)
    defaults = voice.manifest["defaults"]
    noise_scale, length_scale, noise_w = (defaults[k] for k in ("noise_scale", "length_scale", "noise_w"))
    scales = np.array([noise_scale, length_scale, noise_w], np.float32)  # Piper's order
    sentences = [ids for line in TEXT.splitlines() if line.strip() for ids in voice.frontend.sentences(line)]
    sentences = sentences[:n_sentences]
    rows: dict[str, list[float]] = {"piper_onnxruntime": [], "tts_neuron_imported": []}
    audio_seconds = 0.0
    generator = torch.Generator().manual_seed(0)
    sid = voice.speaker_id(None)
    for ids in sentences:
        feeds = {
            "input": np.array([ids], np.int64),
            "input_lengths": np.array([len(ids)], np.int64),
            "scales": scales,
        }
        if sid is not None:
            feeds["sid"] = sid.numpy()
        started = time.perf_counter()
        audio = session.run(None, feeds)[0]
        rows["piper_onnxruntime"].append(time.perf_counter() - started)
        started = time.perf_counter()
        with torch.inference_mode():
            voice.model.infer(torch.tensor([ids]), sid, length_scale, noise_scale, noise_w, generator)
        rows["tts_neuron_imported"].append(time.perf_counter() - started)
        audio_seconds += audio.size / voice.sample_rate
    return {
        "sentences": len(sentences),
        "piper_audio_seconds": round(audio_seconds, 2),
        "threads": threads,
        **{
            name: {
                "ttfa_p50_ms": round(1000 * statistics.median(times), 1),
                "total_s": round(sum(times), 3),
            }
            for name, times in rows.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("voice", type=Path, help="the Piper voice's .onnx (its .onnx.json beside it)")
    parser.add_argument("--imported", type=Path, help="its imported folder (default: import into a temp dir)")
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        imported = args.imported or Path(tmp)
        if args.imported is None:
            import_voice(args.voice, None, imported)
        result = compare(args.voice, imported, args.sentences, args.threads)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
