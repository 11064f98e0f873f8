"""The stack builder and the registry: the seed's JSON, nesting, plug-ins, errors that locate the entry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import tts_neuron
from tts_neuron.addon import load_addon
from tts_neuron.blocks.acoustic import Decoder, Encoder, Encoders, Upsampler
from tts_neuron.blocks.base import Chunk, Features, StreamableBlock, StreamablePipeline, StreamableStack
from tts_neuron.blocks.context import BuildContext
from tts_neuron.errors import StackError
from tts_neuron.registry import known_blocks, register_block, resolve_block
from tts_neuron.stack import build_stack, describe_tree

SEED_STACK_JSON = """[{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
 "streamable_block": {"type": "StreamableStack", "stack": [{"type": "Upsampler"}, {"type": "Decoder"}]}}]"""


def build(addon_dir: Path, spec: object) -> StreamableStack:
    return build_stack(spec, BuildContext(load_addon(addon_dir), torch.device("cpu"), "stack"))


def test_seed_stack_builds_verbatim(tiny_addon_dir: Path) -> None:
    import json

    stack = build(tiny_addon_dir, json.loads(SEED_STACK_JSON))
    (pipeline,) = stack.stack
    assert isinstance(pipeline, StreamablePipeline)
    assert isinstance(pipeline.sequence_block, Encoders)
    assert [type(b) for b in pipeline.streamable_block.children()] == [Upsampler, Decoder]


def test_encoders_makes_one_block_per_encoder_network(tiny_addon_dir: Path) -> None:
    stack = build(tiny_addon_dir, [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
                                    "streamable_block": {"type": "Upsampler"}}])  # fmt: skip
    encoders = stack.stack[0].children()[0]
    assert [b.name for b in encoders.children() if isinstance(b, Encoder)] == [
        "text_encoder",
        "duration_predictor",
    ]


def test_block_parameters_come_from_the_entry(tiny_addon_dir: Path) -> None:
    spec = [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
             "streamable_block": {"type": "Upsampler", "chunk_frames": 7, "length_scale": 1.5}}]  # fmt: skip
    upsampler = build(tiny_addon_dir, spec).stack[0].children()[1]
    assert (upsampler.chunk_frames, upsampler.length_scale) == (7, 1.5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"type": "Nope"}], r"stack\[0\]: unknown block type 'Nope'; known: .*Decoder.*Encoders"),
        (
            [
                {
                    "type": "StreamablePipeline",
                    "sequence_block": {"type": "Encoders"},
                    "streamable_block": {
                        "type": "StreamableStack",
                        "stack": [{"type": "Upsampler"}, {"type": "Decodr"}],
                    },
                }
            ],
            r"stack\[0\]\.streamable_block\.stack\[1\]: unknown block type 'Decodr'",
        ),
        (
            [{"type": "Encoders"}],
            r"stack\[0\]: 'Encoders' is a SequenceBlock, but a StreamableBlock is needed",
        ),
        (
            [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"}}],
            "needs 'streamable_block'",
        ),
        (
            [{"type": "Upsampler", "chunk_frame": 3}],
            r"stack\[0\]: Upsampler: .*chunk_frame.*accepted parameters",
        ),
        ([{"type": "Upsampler", "chunk_frames": 0}], r"stack\[0\]: Upsampler: chunk sizes"),
        ([{"type": "Decoder", "network": "missing"}], r"stack\[0\]: the addon has no network 'missing'"),
        ([{"type": "no_such_module:Block"}], "cannot import module 'no_such_module'"),
        ([{"type": "torch:Tensor"}], "is not a SequenceBlock or StreamableBlock"),
        ([{"kind": "Upsampler"}], "needs a string 'type'"),
        (["Upsampler"], "must be an object"),
        ([], "non-empty list"),
        ({"stack": "Upsampler"}, "non-empty list"),
    ],
)
def test_bad_stacks_name_the_entry(tiny_addon_dir: Path, spec: object, message: str) -> None:
    with pytest.raises(StackError, match=message):
        build(tiny_addon_dir, spec)


class Doubler(StreamableBlock):
    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        for chunk in upstream or ():
            yield Chunk(chunk.data * 2, chunk.start, chunk.final)


def test_blocks_by_module_path_and_by_registration(tiny_addon_dir: Path) -> None:
    assert resolve_block("tests.test_stack:Doubler") is Doubler
    register_block("Doubler", Doubler)
    assert "Doubler" in known_blocks()
    register_block("LazyDoubler", "tests.test_stack:Doubler")
    assert resolve_block("LazyDoubler") is Doubler
    stack = build(tiny_addon_dir, [{"type": "Upsampler"}, {"type": "Doubler"}, {"type": "LazyDoubler"}])
    features = {"encodings": torch.ones(1, 2, 3), "log_durations": torch.log1p(torch.tensor([[2.0, 1.0]]))}
    chunks = list(stack.stream(None, features))
    assert torch.equal(torch.cat([c.data for c in chunks]), torch.full((3, 3), 4.0))


def test_register_block_checks_what_it_is_given() -> None:
    with pytest.raises(ValueError, match="format"):
        register_block("X", "no_colon")
    with pytest.raises(TypeError):
        register_block("X", int)  # type: ignore[arg-type]


def test_blocks_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import tts_neuron.registry as registry

    point = EntryPoint(
        name="PluginDoubler", value="tests.test_stack:Doubler", group=registry.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(registry, "entry_points", lambda group: [point] if group == point.group else [])
    assert resolve_block("PluginDoubler") is Doubler
    assert "PluginDoubler" in known_blocks()


def test_describe_tree_shows_nesting(tiny_addon_dir: Path) -> None:
    import json

    lines = describe_tree(build(tiny_addon_dir, json.loads(SEED_STACK_JSON)))
    assert lines[0] == "StreamableStack"
    assert lines[1] == "  StreamablePipeline"
    assert lines[2].startswith("    Encoders") and "Encoder 'text_encoder'" in lines[3]
    assert any(line.startswith("      Decoder 'decoder'") for line in lines)


def test_public_api_is_small() -> None:
    assert {"load", "Voice", "SequenceBlock", "StreamableBlock", "SequenceBlockContainer", "StreamableStack",
            "StreamablePipeline", "register_block"} <= set(tts_neuron.__all__)  # fmt: skip


def test_encoder_pieces_and_decoder_segments_must_cut_alike(tiny_tacotron_dir: Path) -> None:
    """Encoders and the attention decoder each cut a long sentence at its own `max_tokens` (at most their
    largest bucket, 48 here); different limits would decode segments across separately encoded pieces,
    so the stack is refused."""
    stack = load_addon(tiny_tacotron_dir).stacks["cpu"]
    stack[0]["sequence_block"]["max_tokens"] = 32
    with pytest.raises(
        StackError, match=r"pieces of at most \[32\] tokens but .* segments of at most \[48\]"
    ):
        tts_neuron.load(tiny_tacotron_dir, stack=stack)
    stack[0]["streamable_block"]["stack"][0]["max_tokens"] = 32
    assert tts_neuron.load(tiny_tacotron_dir, stack=stack).stack_name == "custom"


def test_blocks_never_import_the_builder() -> None:
    """The arrows run one way: the builder (`tts_neuron.stack`) imports blocks, blocks import only
    `tts_neuron.blocks.context` to be built."""
    import ast

    import tts_neuron.blocks

    offenders = []
    for path in Path(tts_neuron.blocks.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            bad = [name for name in names if name and name.startswith("tts_neuron.stack")]
            offenders += [f"{path.name}: {name}" for name in bad]
    assert offenders == []
