"""The neural vocoder as an addon network: its sizes, its window buckets, and installing it in a voice.

One vocoder serves every voice of the same audio settings (as the seed's framework runs all its voices
through one vocoder): `install_vocoder` writes its parameters into a voice's folder and declares it in
that voice's addon.json, leaving the rest of the voice as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tts_neuron.addon import ADDON_FILE, load_addon
from tts_neuron.audio import AudioConfig
from tts_neuron.models.vocoder import MelVocoder
from tts_neuron_build.addon_writer import NetworkEntry, declaration, save_parameters

VOCODER_NAME = "vocoder"
VOCODER_SIZES: dict[str, Any] = {"dim": 256, "hidden": 768, "layers": 4, "kernel_size": 7}
CORES = (16, 64, 128)
"""Frames of audio each compiled window makes (it adds the receptive field on each side): the first
window of a sentence is the smallest, so its audio comes early; full windows are the largest."""


def vocoder_config(audio: AudioConfig, sizes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The MelVocoder's constructor arguments for a voice's audio settings."""
    return {
        "n_mels": audio.n_mels,
        "n_fft": audio.n_fft,
        "hop_length": audio.hop_length,
        "sample_rate": audio.sample_rate,
        "f_min": audio.f_min,
        "f_max": audio.f_max,
        **VOCODER_SIZES,
        **(sizes or {}),
    }


def vocoder_network(audio: AudioConfig, sizes: dict[str, Any] | None = None) -> NetworkEntry:
    """A freshly initialised vocoder as an addon entry, with its window buckets."""
    config = vocoder_config(audio, sizes)
    network = MelVocoder(**config)
    halo = 2 * network.receptive_radius
    return NetworkEntry(
        network, "MelVocoder", "vocoder", ["mel", "frame_mask"], ["audio"], config, [c + halo for c in CORES]
    )


def install_vocoder(addon_dir: Path, network: MelVocoder, sizes: dict[str, Any] | None = None) -> None:
    """Write a trained vocoder into an addon and declare it there (replacing an older one)."""
    addon = load_addon(addon_dir)
    entry = vocoder_network(addon.audio, sizes)
    entry.network = network
    path = addon_dir / ADDON_FILE
    config = json.loads(path.read_text(encoding="utf-8"))
    config["networks"][VOCODER_NAME] = declaration(
        entry, addon_dir, save_parameters(addon_dir, VOCODER_NAME, network)
    )
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    load_addon(addon_dir)
