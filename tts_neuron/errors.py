"""Exceptions of the public API: one type per kind of bad input, so callers can tell them apart."""


class TTSNeuronError(Exception):
    """Base of every error tts_neuron raises on purpose; the CLI turns these into one line and exit 2."""


class AddonError(TTSNeuronError):
    """An addon folder, its addon.json, or one of its network files is missing, malformed or unsafe."""


class StackError(AddonError):
    """A stack (from addon.json or a stack file) names an unknown block or gives a block bad parameters."""


class TextError(TTSNeuronError, ValueError):
    """The text has nothing that can be spoken (empty, whitespace, only punctuation or emoji)."""


class TargetUnavailableError(TTSNeuronError):
    """The requested target (cuda, neuron) has no runtime on this host."""


class AttentionError(TTSNeuronError, RuntimeError):
    """An attention decoder went wrong (stalled, skipped, repeated, overran, stopped early); decoding
    stopped there. The attributes say where, in decoder steps, frames and tokens of the sentence."""

    def __init__(self, message: str, *, kind: str, step: int, frame: int, token: int) -> None:
        super().__init__(message)
        self.kind, self.step, self.frame, self.token = kind, step, frame, token


class OutputError(TTSNeuronError):
    """An output (a WAV or mel file, or stdout) cannot be written; a failed run leaves no file behind."""


class SynthesisError(TTSNeuronError, RuntimeError):
    """Speaking failed inside the stack: a block raised an error of its own, or made no audio, or audio that
    is not finite (NaN or infinity)."""


class SettingError(TTSNeuronError, ValueError):
    """A per-call setting the voice does not take, or a value out of its range."""


class UnknownSpeakerError(SettingError):
    """A multi-speaker voice was asked for a speaker (by name or id) it does not have; a single-speaker
    voice was asked for any speaker but its own."""
