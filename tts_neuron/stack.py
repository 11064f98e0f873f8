"""Builds blocks from a stack: the JSON list that says how an addon's blocks connect.

A stack is a list of StreamableBlock entries run in order (a StreamableStack). Each entry is an object
with a "type" (see `tts_neuron.registry`) and that block's parameters; containers nest entries. Errors
name the JSON path of the bad entry, e.g. `stacks.cpu[0].streamable_block.stack[1]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tts_neuron.addon import read_json
from tts_neuron.blocks.base import Block, StreamableBlock, StreamableStack
from tts_neuron.blocks.context import BuildContext
from tts_neuron.errors import StackError


def build_stack(spec: Any, ctx: BuildContext) -> StreamableStack:
    """A stack list (or an object with a "stack" list, as in a stack file) to one StreamableStack."""
    if isinstance(spec, dict) and "stack" in spec:
        spec = spec["stack"]
    if not isinstance(spec, list) or not spec:
        raise StackError(f"{ctx.path}: a stack is a non-empty list of block entries")
    return StreamableStack([ctx.build(entry, f"[{i}]", StreamableBlock) for i, entry in enumerate(spec)])


def read_stack_file(path: Path) -> Any:
    """The JSON of a stack file; JSON nested too deeply for Python's parser is a StackError too."""
    try:
        return read_json(path, StackError)
    except RecursionError:
        raise StackError(f"{path}: JSON nested too deeply to read") from None


def describe_tree(block: Block, indent: str = "") -> list[str]:
    """The block tree as indented lines, for `tts-neuron inspect`."""
    lines = [indent + block.describe()]
    for child in block.children():
        lines += describe_tree(child, indent + "  ")
    return lines
