"""Importers turn voices trained elsewhere into tts_neuron's own networks (weights, never graphs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tts_neuron.errors import AddonError


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a file an importer was given, or an AddonError naming the file."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AddonError(f"{path}: not a readable JSON file: {err}") from None
    if not isinstance(config, dict):
        raise AddonError(f"{path}: expected a JSON object")
    return config
