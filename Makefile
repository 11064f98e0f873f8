# Two commands on a fresh machine: `make demo` and `make test`. Everything else builds on `setup`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build: a bare `pip install torch` would pull a CUDA build of several GB.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
ADDON ?= addons/fastspeech-en
ATTENTION_ADDON ?= addons/tacotron-en
# The random-weights placeholder goes to a build folder (ignored by git), never over a trained voice.
UNTRAINED_ADDON ?= build/untrained-en
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
DEMO_TEXT ?= Hello! This is tts neuron, speaking one sentence with its default voice.

.PHONY: setup demo test test-all test-torch29 neuron-smoke cuda-smoke browser lint teacher voice voice-tacotron vocoder voice-untrained eval compare bench serve-load soak clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)" \
		|| $(PY) -m pip install --quiet "$(TORCH_SPEC)" --index-url $(TORCH_INDEX)
	$(PY) -m pip install --quiet -e ".[dev,eval,bench,serve,ray,piper,kokoro]"
	touch $@

demo: setup
	$(VENV)/bin/tts-neuron synthesize --addon $(ADDON) --text "$(DEMO_TEXT)" --out demo.wav --timings
	@echo "wrote demo.wav"

# One test worker per core (pytest-xdist), a test file per worker at a time, so that module fixtures
# (compiled addons, loaded voices, a Ray instance) are built once, the longest files first (conftest.py's
# LONGEST_FILES); most tests hold one core. `test-all` runs one worker: its slow checks play audio at real time, count a machine's Ray processes, soak memory.
TEST_WORKERS ?= auto
PYTEST := -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: setup
	$(PY) $(PYTEST)

test-all: setup browser
	$(PY) -m pytest -q -m ""

# The torch an inf2 host has (the Neuron SDK's torch-xla line pins 2.9), on CPU, in a second venv: the
# fixed-shape, check, voice, channels-last and hardware-kit tests. The CPU index's build first (small);
# PyPI's Linux wheel of 2.9 is the CUDA build (6.6 GB installed with its nvidia packages), the fallback
# where that index is not reachable.
VENV29 := build/venv-torch29
TORCH29_SPEC ?= torch==2.9.1
TORCH29_TESTS ?= tests/test_fixed_shapes.py tests/test_check.py tests/test_voice.py tests/test_neuron_sdk.py \
	tests/test_split_safe.py tests/test_channels_last.py tests/test_compile_pool.py tests/hardware

$(VENV29)/.installed: pyproject.toml
	test -d $(VENV29) || $(PYTHON) -m venv $(VENV29)
	$(VENV29)/bin/python -m pip install --quiet --upgrade pip
	$(VENV29)/bin/python -c "import torch, sys; sys.exit(not torch.__version__.startswith('2.9.'))" 2>/dev/null \
		|| $(VENV29)/bin/python -m pip install --quiet "$(TORCH29_SPEC)" --index-url $(TORCH_INDEX) \
		|| $(VENV29)/bin/python -m pip install --quiet "$(TORCH29_SPEC)"
	$(VENV29)/bin/python -m pip install --quiet -e ".[dev]"
	touch $@

test-torch29: $(VENV29)/.installed
	$(VENV29)/bin/python $(PYTEST) -p no:cacheprovider $(TORCH29_TESTS)

# The hardware test kit (tests/hardware, docs/fixed-shapes.md): every test marked neuron (cuda) with a
# line each and the figures, recorded in $OUT/neuron.json or build/hardware/neuron.json. On an inf2
# host run it with the Neuron environment's python: `make neuron-smoke PY=python`. Without the SDK and
# /dev/neuron0 (without a GPU) every test is skipped and says why.
neuron-smoke:
	$(PY) -m pytest -m neuron -rA -p no:cacheprovider tests/hardware

cuda-smoke:
	$(PY) -m pytest -m cuda -rA -p no:cacheprovider tests/hardware

# The web page's test (slow) drives Debian's chromium with playwright: apt only when chromium is missing
# (about 30 s), as root or through sudo.
browser: setup
	command -v chromium >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }
	$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install --quiet -e ".[browser]"

lint: setup
	$(VENV)/bin/ruff check tts_neuron compile tests benchmarks docs/examples
	$(VENV)/bin/ruff format --check tts_neuron compile tests benchmarks docs/examples
	$(VENV)/bin/mypy tts_neuron compile benchmarks/*.py

# espeak-ng teacher data (not committed; about two minutes), then the trained voice (about 40 minutes on
# 2 cores), then its intelligibility against espeak-ng's own.
teacher: setup
	$(PY) -m tts_neuron_build.teacher --out data/teacher

voice: setup
	test -f data/teacher/meta.json || $(PY) -m tts_neuron_build.teacher --out data/teacher
	$(PY) -m tts_neuron_build.train_fastspeech --data data/teacher --out $(ADDON)

# The attention voice on the same teacher data (about an hour on 2 cores).
voice-tacotron: setup
	test -f data/teacher/meta.json || $(PY) -m tts_neuron_build.teacher --out data/teacher
	$(PY) -m tts_neuron_build.train_tacotron --data data/teacher --out $(ATTENTION_ADDON)

# The neural vocoder on the same teacher's audio (about 50 minutes on 2 cores), installed in both voices.
vocoder: setup
	test -f data/teacher/meta.json || $(PY) -m tts_neuron_build.teacher --out data/teacher
	$(PY) -m tts_neuron_build.train_vocoder --data data/teacher --addons $(ADDON) $(ATTENTION_ADDON)

eval: setup
	test -f data/teacher/meta.json || $(PY) -m tts_neuron_build.teacher --out data/teacher
	$(PY) benchmarks/intelligibility.py --addon $(ADDON) --data data/teacher --compare-stack griffin-lim \
		--out benchmarks/results

# Both voices side by side: intelligibility on the held-out sentences, robustness on the hard ones, and
# latency (about 45 minutes on 2 cores; the README's comparison table comes from these files).
compare: setup
	test -f data/teacher/meta.json || $(PY) -m tts_neuron_build.teacher --out data/teacher
	$(PY) benchmarks/intelligibility.py --addon $(ADDON) --data data/teacher --compare-stack griffin-lim \
		--out benchmarks/results
	$(PY) benchmarks/intelligibility.py --addon $(ATTENTION_ADDON) --data data/teacher \
		--out benchmarks/results/$(notdir $(ATTENTION_ADDON))
	$(PY) benchmarks/robustness.py --addons $(ADDON) $(ATTENTION_ADDON) --out benchmarks/results
	$(PY) benchmarks/run.py --quick --addons $(ADDON) $(ATTENTION_ADDON)

# Every addon x stack x target this machine can run; `--quick` finishes in under 3 minutes.
bench: setup
	$(PY) benchmarks/run.py --out benchmarks/results

# The server under 1, 4, 16 and 64 concurrent real-time clients, batching runner against direct runner
# (about 6 minutes on 2 cores; run it on a quiet machine).
serve-load: setup
	$(PY) benchmarks/serve_load.py --out benchmarks/results/serve_load

# 16 streams for 10 minutes against the batching server: errors and memory growth (not in CI).
soak: setup
	$(PY) benchmarks/serve_load.py --soak-minutes 10 --out benchmarks/results/soak

voice-untrained: setup
	$(PY) -m tts_neuron_build.untrained_voice --out $(UNTRAINED_ADDON)

clean:
	rm -rf $(VENV) demo.wav .pytest_cache .mypy_cache .ruff_cache
