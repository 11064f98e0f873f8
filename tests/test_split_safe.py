"""The networks' split-safe forms (pytorch/xla#8640) equal the forms they replace."""

from __future__ import annotations

import contextlib

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tts_neuron.models import LSTMCell, split_columns, split_safe
from tts_neuron.models.tacotron import AttentionStep


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=5),
    rows=st.integers(1, 4),
    three_d=st.booleans(),
    gathering=st.booleans(),
)
def test_split_columns_equals_split(sizes: list[int], rows: int, three_d: bool, gathering: bool) -> None:
    x = torch.randn((rows, 3, sum(sizes)) if three_d else (rows, sum(sizes)))
    with split_safe() if gathering else contextlib.nullcontext():
        pieces = split_columns(x, sizes)
    for ours, reference in zip(pieces, x.split(sizes, dim=-1), strict=True):
        assert torch.equal(ours, reference)


def test_split_columns_refuses_sizes_that_do_not_cover_the_dim() -> None:
    try:
        split_columns(torch.zeros(2, 5), [2, 2])
    except ValueError as err:
        assert "sum to 4" in str(err)
    else:
        raise AssertionError("no error")


def test_lstm_cell_equals_torch_lstm_cell() -> None:
    torch.manual_seed(0)
    reference = nn.LSTMCell(12, 7)
    ours = LSTMCell(12, 7)
    ours.load_state_dict(reference.state_dict())  # same parameter names: old checkpoints load unchanged
    x, h, c = torch.randn(3, 12), torch.randn(3, 7), torch.randn(3, 7)
    with split_safe():
        gathered = ours(x, (h, c))
    for a, b in zip(gathered, reference(x, (h, c)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_attention_step_has_no_split_of_a_2d_tensor() -> None:
    """The decoder step's exported graph splits, chunks or slices no 2-D tensor along dim 1."""
    from tts_neuron.check import split_pattern_ops

    step = AttentionStep(n_mels=8, memory_channels=16, attention_dim=8, prenet_channels=8,
                         attention_rnn=12, decoder_rnn=12)  # fmt: skip
    with split_safe():
        program = torch.export.export(step.eval(), step.example_inputs(5), strict=False)
    assert split_pattern_ops(program.run_decompositions()) == []
    unsafe = torch.export.export(_UnsafeSplit(), (torch.zeros(2, 6),), strict=False)
    assert split_pattern_ops(unsafe.run_decompositions())


class _UnsafeSplit(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.split([4, 2], dim=1)
        return a.sum(1) + b.sum(1)
