"""What gets installed: every package folder, with the build side under a name of this project's own."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parent.parent


def test_the_package_list_names_every_package_folder_and_no_top_level_compile() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"tts_neuron_build": "compile"}
    folders = {
        ".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "tts_neuron").rglob("__init__.py")
    }
    assert set(config["packages"]) == folders | {"tts_neuron_build"}
    assert not (REPO / "compile" / "__init__.py").read_text().count("import compile")
