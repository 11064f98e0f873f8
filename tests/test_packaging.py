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


def test_the_command_line_refuses_a_bad_argument_without_importing_torch() -> None:
    """`tts_neuron` imports its public names on first use, so the CLI module loads without torch (2 to 3
    s): a missing output, or a `serve` flag out of range, is refused at once. Every public name resolves,
    and `__all__` lists them."""
    import json
    import subprocess
    import sys

    import tts_neuron

    assert sorted(tts_neuron.__all__) == sorted(tts_neuron._EXPORTS)
    assert all(getattr(tts_neuron, name) is not None for name in tts_neuron.__all__)
    probe = (
        "import json, sys, tts_neuron.cli\n"
        "code = tts_neuron.cli.main(json.loads(sys.argv[1]))\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "sys.exit(code)"
    )
    for argv, message in [
        (["synthesize", "--addon", "x", "--text", "Hello."], "say where the output goes"),
        (["serve", "--addon", "x", "--processes", "0"], "--processes must be at least 1"),
        (["serve", "--addon", "x", "--max-speech-seconds", "0"], "--max-speech-seconds must be positive"),
    ]:
        result = subprocess.run(
            [sys.executable, "-c", probe, json.dumps(argv)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "torch" not in result.stderr, result.stderr
