"""Shared fixtures: a tiny addon with random weights, written in seconds, so the whole stack runs in CI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tts_neuron_build.addon_writer import NEURON_STACK, SEED_STACK, SPEAKING_STACK, NetworkEntry, write_addon
from tts_neuron_build.fastspeech_voice import fastspeech_networks
from tts_neuron_build.symbols import collect_symbols
from tts_neuron_build.tacotron_voice import STACKS as TACOTRON_STACKS
from tts_neuron_build.tacotron_voice import tacotron_networks

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "docs" / "examples"

TINY_SIZES = {"channels": 16, "encoder_layers": 1, "decoder_channels": 16, "decoder_layers": 2}
TINY_VOCODER = {"dim": 16, "hidden": 32, "layers": 1}
LONGEST_FILES = [
    "test_cli.py",  # 139 s
    "test_server.py",  # 98
    "test_check.py",  # 79
    "test_hardening.py",  # 74
    "test_attention.py",  # 74
    "test_ray.py",  # 58
    "test_piper_import.py",  # 54
    "test_openai_clients.py",  # 42
    "test_admission.py",  # 41
]
"""The test files that take longest (summed from `pytest -n 2 --durations=0` on a 2-core host; the whole
suite is about 1,000 s of one worker): run first, so that `make test`'s two workers (a file at a time,
`--no-loadscope-reorder`) finish together instead of one starting a long file while the other is idle."""

COVERAGE_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs!",
    "How vexingly quick daft zebras jump?",
    "She sells sea shells by the sea shore, and the thousand ships were measured in June.",
    "Would you, could you, on a boat? Yes, with joy, although the voice is choked.",
]


def batch_one(networks: dict[str, NetworkEntry]) -> dict[str, NetworkEntry]:
    """Tiny voices compile at batch 1 only, so that the fixed-shape tests compile in seconds; the
    batching tests declare more batch sizes themselves."""
    for entry in networks.values():
        entry.batch_sizes = [1]
    return networks


def write_tiny_addon(root: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    symbols = collect_symbols(COVERAGE_TEXT)
    return write_addon(
        root,
        name="tiny",
        description="test fixture with random weights",
        trained=False,
        symbols=symbols,
        networks=batch_one(
            fastspeech_networks(
                len(symbols), sizes=TINY_SIZES, token_buckets=[8, 16, 48], vocoder_sizes=TINY_VOCODER
            )
        ),
        stacks={"cpu": SPEAKING_STACK, "mel": SEED_STACK, "neuron": NEURON_STACK},
        default_stack="cpu",
    )


@pytest.fixture(scope="session")
def tiny_addon_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention tiny addon; copy it (`addon_copy`) before changing it."""
    return write_tiny_addon(tmp_path_factory.mktemp("addon") / "tiny")


@pytest.fixture
def addon_copy(tiny_addon_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny addon that a test may break."""
    return Path(shutil.copytree(tiny_addon_dir, tmp_path / "tiny"))


def edit_addon_json(root: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = root / "addon.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def replace_parameters(root: Path, network: str, data: bytes) -> Path:
    """Overwrite a network's parameter file and record its new sha256, as re-exporting a voice would."""
    import hashlib

    path = root / "networks" / f"{network}.safetensors"
    path.write_bytes(data)
    edit_addon_json(root, lambda c: c["networks"][network].update(sha256=hashlib.sha256(data).hexdigest()))
    return path


TINY_TACOTRON_SIZES = {
    "channels": 16,
    "encoder_layers": 1,
    "attention_dim": 8,
    "reduction": 2,
    "prenet_channels": 8,
    "rnn": 16,
    "postnet_channels": 8,
    "postnet_layers": 1,
}


def write_tiny_tacotron_addon(root: Path, seed: int = 0) -> Path:
    """An attention voice with random weights: it cannot align, so its guards must stop it."""
    torch.manual_seed(seed)
    symbols = collect_symbols(COVERAGE_TEXT)
    networks = batch_one(
        tacotron_networks(
            len(symbols), sizes=TINY_TACOTRON_SIZES, token_buckets=[8, 16, 48], vocoder_sizes=TINY_VOCODER
        )
    )
    return write_addon(
        root,
        name="tiny-tacotron",
        description="test fixture with random weights",
        trained=False,
        symbols=symbols,
        networks=networks,
        stacks=TACOTRON_STACKS,
        default_stack="cpu",
    )


@pytest.fixture(scope="session")
def tiny_tacotron_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_tacotron_addon(tmp_path_factory.mktemp("addon") / "tiny-tacotron")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """LONGEST_FILES first, in that order; the rest as collected (sorted is stable)."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
