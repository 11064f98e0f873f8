"""OpenAI's voice names on a server whose voices have their own names.

Clients written for OpenAI send one of its 13 voice names (Pipecat accepts nothing else; the OpenAI SDK's
examples, Open WebUI and Home Assistant default to `alloy`, LiveKit to `ash`). Each maps to a served
voice: by default the first one served (the first `--addon`), unless `--voice-alias NAME=VOICE` says
otherwise. A served voice's own name always means that voice, and any other name is an error that lists
the voices: never a silent fallback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
"""OpenAI's built-in voices, in its own order."""


def parse_alias(text: str) -> tuple[str, str]:
    """`NAME=VOICE` (as `--voice-alias` takes it) to (name, voice); ValueError if it is not that."""
    name, sep, voice = text.partition("=")
    if not sep or not name.strip() or not voice.strip():
        raise ValueError(f"--voice-alias takes NAME=VOICE (e.g. alloy=fastspeech-en), got {text!r}")
    return name.strip(), voice.strip()


def alias_table(
    voices: Iterable[str], aliases: Mapping[str, str], default: str | None = None
) -> dict[str, str]:
    """Every name a request may use that is not a served voice's own -> the voice it means: OpenAI's 13
    names to `default` (the first voice when it is None or not served), then `aliases` (which may add
    names or remap OpenAI's)."""
    served = list(voices)
    if default not in served:
        default = served[0] if served else None
    table = dict.fromkeys(OPENAI_VOICES, default) if default else {}
    table.update(aliases)
    return {name: voice for name, voice in table.items() if name not in served}


def check_aliases(voices: Iterable[str], aliases: Mapping[str, str]) -> None:
    """Refuse, naming it, an alias whose voice is not served (before the server opens its port)."""
    served = list(voices)
    for name, voice in aliases.items():
        if voice not in served:
            raise ValueError(
                f"--voice-alias {name}={voice}: no voice '{voice}' is served; it has {', '.join(served)}"
            )


def resolve(
    name: str, voices: Iterable[str], aliases: Mapping[str, str], default: str | None = None
) -> str | None:
    """The served voice a requested name means, or None if it means none."""
    served = list(voices)
    if name in served:
        return name
    return alias_table(served, aliases, default).get(name)


__all__ = ["OPENAI_VOICES", "alias_table", "check_aliases", "parse_alias", "resolve"]
