"""espeak-ng through its C API, loaded from the `espeakng-loader` wheel (library and data inside it).

We synthesise rather than only transcribe, because the phoneme events of synthesis carry each phoneme's
start sample: the runtime reads the phoneme names, the training recipe also keeps the audio and the
timings, and both see exactly the same phoneme sequence. libespeak-ng holds global state, so every call
goes through one process-wide lock.

libespeak-ng runs in this process, so text that overflows one of its fixed buffers kills the process
(SIGSEGV, or SIGABRT from its stack protector). `bound_text` reshapes the two measured triggers before
every call; docs/security.md gives the measurements.
"""

from __future__ import annotations

import ctypes
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tts_neuron.errors import TTSNeuronError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Phoneme:
    """One phoneme as espeak-ng emits it: its mnemonic (stress marks included) and where it starts."""

    name: str
    start: int
    """First audio sample of the phoneme; the next phoneme's start is its end."""
    word: int
    """Index of the word it belongs to within the synthesised text (-1 before the first word)."""


@dataclass(frozen=True)
class Synthesis:
    audio: np.ndarray
    """int16 samples at `sample_rate`."""
    phonemes: list[Phoneme]
    sample_rate: int


MAX_CHAIN_BYTES = 96
"""Most bytes (letters and the dots between them) one dotted chain such as "U.S.A." or "a.a. a.a." may hold.
libespeak-ng gathers a chain's single letters into a fixed buffer and overflows it at about 200 bytes of
letters (measured: 191 ASCII letters, 101 two-byte, 67 three-byte letters); 96 bytes is under half."""
MAX_TOKEN_CHARS = 48
"""Longest run of non-space characters handed on. Long tokens of other kinds did not crash (measured up to
1,500 characters), but no word is this long, and 48 characters of at most 3 bytes fit the 160-byte word
buffers of libespeak-ng."""
_CHAIN_ITEM_CHARS = 4
"""What lies between two dots continues a chain when it is this short and has no space: a letter, or a
short word (as in "U.S.A." or "e.g.")."""

_LONG_TOKEN = re.compile(rf"\S{{{MAX_TOKEN_CHARS + 1},}}")
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_NON_WORD_RUN = re.compile(rf"((?:[^\w{_MARKS}]|_)+)")
"""Spaces and punctuation; "_" among them, as libespeak-ng reads it as a space, but not combining marks,
which it reads as letters."""


def _char_start(data: bytes, end: int) -> int:
    """The offset of the first byte of the UTF-8 character that ends at byte `end` of `data`."""
    start = end - 1
    while start > 0 and data[start] & 0xC0 == 0x80:  # a continuation byte
        start -= 1
    return start


def bound_text(text: str) -> str:
    """The text with no token longer than MAX_TOKEN_CHARS and no dotted chain longer than MAX_CHAIN_BYTES.

    A long token is cut after its last punctuation in the second half of MAX_TOKEN_CHARS, else at
    MAX_TOKEN_CHARS (not before a combining mark); a long chain is cut by turning the spaces and
    punctuation around one of its dots into a space. Text without either is returned unchanged; the time
    taken is linear in the length of the text.
    """
    return _cut_chains(_LONG_TOKEN.sub(_cut_token, text))


def _cut_token(match: re.Match[str]) -> str:
    token, pieces, start = match.group(), [], 0
    while len(token) - start > MAX_TOKEN_CHARS:
        end = start + MAX_TOKEN_CHARS
        cut = next(
            (i + 1 for i in range(end - 1, start + MAX_TOKEN_CHARS // 2 - 1, -1) if not token[i].isalnum()),
            end,
        )
        while cut > start + 1 and unicodedata.category(token[cut])[0] == "M":
            cut -= 1
        pieces.append(token[start:cut])
        start = cut
    return " ".join([*pieces, token[start:]])


def _cut_chains(text: str) -> str:
    """Replace a chain's separator by a space wherever the chain would pass MAX_CHAIN_BYTES."""
    items = _split_at_dots(text)  # item, separator, item, ...
    parts = [items[0]]
    chain_bytes = len(items[0].encode()) if _in_chain(items[0]) else 0
    for separator, item in zip(items[1::2], items[2::2], strict=True):
        size = len(separator.encode()) + len(item.encode())
        if not _in_chain(item):
            parts += [separator, item]
            chain_bytes = 0
        elif chain_bytes + size > MAX_CHAIN_BYTES:
            parts += [" ", item]
            chain_bytes = len(item.encode())
        else:
            parts += [separator, item]
            chain_bytes += size
    return "".join(parts)


def _split_at_dots(text: str) -> list[str]:
    """[item, separator, item, ...]: a separator is a run of spaces and punctuation that holds a dot."""
    items: list[str] = []
    current: list[str] = []
    for i, run in enumerate(_NON_WORD_RUN.split(text)):  # word, non-word run, word, ...
        if i % 2 and "." in run:
            items += ["".join(current), run]
            current = []
        else:
            current.append(run)
    return [*items, "".join(current)]


def _in_chain(item: str) -> bool:
    """Whether what lies between two dots continues a chain: not a word, nor a letter and a space."""
    return len(item) <= _CHAIN_ITEM_CHARS and not any(char.isspace() for char in item)


class EspeakError(TTSNeuronError):
    """libespeak-ng could not be loaded or initialised."""


class Espeak:
    """The process-wide espeak-ng instance. Use `Espeak.get(voice)`."""

    _lock = threading.Lock()
    _instance: Espeak | None = None

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:  # pragma: no cover - a dependency of the package
            raise EspeakError("espeak-ng is missing: pip install espeakng-loader") from err
        try:
            self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as err:
            raise EspeakError(f"cannot load libespeak-ng: {err}") from err
        # espeak_Initialize wants the folder that *contains* espeak-ng-data.
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        self.sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, _INITIALIZE_PHONEME_EVENTS
        )
        if self.sample_rate <= 0:
            raise EspeakError(
                f"espeak_Initialize failed ({self.sample_rate}) with data in {data_parent.decode()}"
            )
        self._voice: str | None = None
        self._samples: list[np.ndarray] = []
        self._events: list[tuple[int, str, int]] = []
        self._callback = _SynthCallback(self._on_synth)  # kept alive as long as the instance
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = Espeak()
            return cls._instance

    def _on_synth(self, wav: ctypes._Pointer, n_samples: int, events: ctypes._Pointer) -> int:
        if n_samples > 0:
            self._samples.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                self._events.append(
                    (_EVENT_PHONEME, event.id.string.decode("utf-8", "replace"), event.sample)
                )
            elif event.type == _EVENT_WORD:
                self._events.append((_EVENT_WORD, "", event.sample))
            i += 1
        return 0

    def _set_voice(self, voice: str) -> None:
        """Switch espeak-ng to `voice` unless it is current (call with the lock held)."""
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise EspeakError(f"espeak-ng has no voice '{voice}'")
            self._voice = voice

    def clause_runs(
        self, text: str, voice: str, mode: int, stop: Callable[[str], bool] | None = None
    ) -> Iterator[list[tuple[str, str]]]:
        """espeak-ng's transcription of `text` (bounded first) in `voice`, clause by clause, as
        espeak_TextToPhonemes gives it with `mode` (IPA, ties, ...): each clause's phonemes and its own text
        (from its first character to the next clause's first).

        Without `stop`, one run holds every clause. With it, a run ends after a clause whose text `stop`
        accepts (a sentence's end), and each run is read in its own locked call, from the character
        espeak-ng read past the run before (which it keeps, and each call clears first), so the runs give
        what one pass would, the first run costs the same however long the text, and other callers use
        espeak-ng in between."""
        raw = bound_text(text).encode("utf-8").split(b"\0", 1)[0]  # espeak-ng stops at a NUL
        data, offset = ctypes.create_string_buffer(raw), 0
        while offset < len(raw):
            run, offset = self._clause_run(data, raw, offset, voice, mode, stop)
            yield run

    def _clause_run(
        self,
        data: ctypes.Array[ctypes.c_char],
        raw: bytes,
        offset: int,
        voice: str,
        mode: int,
        stop: Callable[[str], bool] | None,
    ) -> tuple[list[tuple[str, str]], int]:
        """The clauses read from byte `offset` of `raw` (held in `data`) up to the first that `stop`
        accepts, and the byte offset of the clause after them (len(raw) at the text's end)."""
        base, start, clauses = ctypes.addressof(data), offset, []
        with self._lock:
            self._set_voice(voice)
            self._clear_carried_state(mode)
            pointer = ctypes.c_void_p(base + offset)
            while pointer.value:
                phonemes = self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, mode) or b""
                # the next clause starts at the character espeak-ng read past this one's end
                end = _char_start(raw, pointer.value - base) if pointer.value else len(raw)
                own = raw[offset:end].decode("utf-8", "ignore")
                clauses.append((phonemes.decode("utf-8", "replace"), own))
                offset = end
                if pointer.value and stop is not None and end > start and stop(own):
                    break
        return clauses, offset

    def _clear_carried_state(self, mode: int) -> None:
        """Clear what libespeak-ng keeps from its last call for the next one, whatever text that reads: the
        character it read past a clause a read stopped after, and a pending "dot" after a text, read or
        synthesised, that ends in two dots ("U.S.A.." made the next text start with "dot"). An empty read
        takes both (call with the lock held; tests/test_espeak_reading.py)."""
        empty = ctypes.create_string_buffer(b"")
        pointer = ctypes.c_void_p(ctypes.addressof(empty))
        self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, mode)

    def synthesize(self, text: str, voice: str = "en-us") -> Synthesis:
        """Speak `text` (one sentence, already normalised) and return its audio and phoneme timings.

        The text is first bounded (`bound_text`), so no input can overflow libespeak-ng's buffers; text
        without long tokens or long dotted chains is spoken exactly as given.
        """
        data = bound_text(text).encode("utf-8") + b"\0"
        with self._lock:
            self._set_voice(voice)
            self._samples, self._events = [], []
            status = self._lib.espeak_Synth(data, len(data), 0, 0, 0, _CHARS_UTF8, None, None)
            samples, events = self._samples, self._events
            self._samples, self._events = [], []
        if status != 0:
            raise EspeakError(f"espeak_Synth failed with status {status}")
        audio = np.concatenate(samples) if samples else np.zeros(0, dtype=np.int16)
        phonemes, word = [], -1
        for kind, name, start in events:
            if kind == _EVENT_WORD:
                word += 1
            elif name:
                phonemes.append(Phoneme(name, start, word))
        return Synthesis(audio.astype(np.int16), phonemes, self.sample_rate)
