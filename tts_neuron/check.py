"""Neuron-readiness without Neuron hardware: the operators each network runs at each of its buckets.

    tts-neuron check --addon DIR [--target neuron] [--json FILE]

neuronx-cc reports an operator it cannot compile only after a long compile on a build host. This check
exports every network with buckets at every bucket (`torch.export`, in the form and with the inputs the
compiler uses), lists the ATen operators of the graph and flags what neuronx-cc is documented to reject:
FFT operators, complex tensors, float64 tensors and outputs whose shape depends on the data. Operators in
no documented supported list are "unverified": they may compile, nothing we can cite says so.

Batch size is not a dimension of the check: a network's operators are the same at every batch size it is
compiled at, so each bucket is exported at batch 1. Where `torch_neuronx` is importable (the real SDK,
which cannot be installed here, so that path has not run) its own `analyze` is run too; it traces the
network and asks neuronx-cc about every operator.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from tts_neuron.addon import load_addon
from tts_neuron.errors import OutputError

SOURCES = {
    "torch-neuronx": "aws-neuron-sdk frameworks/torch/torch-neuronx/pytorch-neuron-supported-operators.rst "
    "(torch-neuronx, the inf2/trn1 package: its documented aten operators)",
    "neuron-cc": "aws-neuron-sdk release-notes/archive/neuron-cc/neuron-cc-ops/neuron-cc-ops-pytorch.rst "
    "(torch-neuron for inf1: operators supported by the previous compiler)",
    "analyze": "aws-neuron-sdk frameworks/torch/torch-neuronx/api-reference-guide/inference/"
    "api-torch-neuronx-analyze.rst (its example: aten::fft_fft fails at neuronx-cc)",
    "EVRF004": "aws-neuron-sdk compiler/error-codes/EVRF004.rst ('Complex data types are not supported "
    "on the Neuron device')",
    "data-types": "aws-neuron-sdk about-neuron/arch/neuron-features/data-types.rst (NeuronCore v2 data "
    "types: FP32, TF32, FP16, BF16, FP8, UINT8; no FP64)",
    "EMOD025": "aws-neuron-sdk compiler/error-codes/EMOD025.rst ('Dynamic shape is not supported'), and "
    "api-torch-neuronx-trace.rst: intermediate shapes are fixed at trace time",
}
"""Where each rule and list below comes from (the AWS Neuron SDK documentation, github.com/aws-neuron)."""

# The documented supported operators, by source, as the docs name them (aten::<name>).
# fmt: off
DOCUMENTED_OPERATORS: dict[str, tuple[str, ...]] = {
    "torch-neuronx": (
        "_s_where", "_softmax", "_unsafe_view", "add", "addcdiv_", "addcmul", "addmm", "bernoulli_",
        "bmm", "constant_pad_nd", "div", "embedding", "empty", "expand", "fill_", "index_select",
        "_log_softmax", "lt", "mm", "mul", "native_batch_norm", "neg", "permute", "relu", "rsub",
        "select", "slice", "sqrt", "sum", "t", "tanh", "transpose", "unsqueeze", "view", "zero_",
    ),
    "neuron-cc": (
        "__and__", "_convolution", "_convolution_mode", "_shape_as_tensor", "_weight_norm", "abs",
        "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d",
        "add", "add_", "addmm", "all", "amax", "amin", "any", "arange", "argmax", "argmin",
        "avg_pool2d", "baddbmm", "batch_norm", "bmm", "broadcast_tensors", "broadcast_to", "bucketize",
        "cat", "ceil", "chunk", "clamp", "clamp_max", "clamp_min", "clip", "clone", "constant_pad_nd",
        "contiguous", "cos", "detach", "div", "dot", "dropout", "einsum", "embedding", "empty",
        "empty_like", "eq", "erf", "exp", "expand", "expand_as", "eye", "fill_", "flatten", "flip",
        "floor", "floor_divide", "full", "full_like", "ge", "gelu", "group_norm", "gt", "hardsigmoid",
        "hardswish", "hardtanh", "index_select", "instance_norm", "isnan", "layer_norm", "le",
        "leaky_relu", "linear", "log", "log2", "log_softmax", "logical_and", "logical_not",
        "logical_or", "logical_xor", "lt", "masked_fill", "matmul", "max", "max_pool2d", "mean",
        "meshgrid", "min", "mm", "movedim", "mul", "mv", "ne", "neg", "new_empty", "new_ones",
        "numel", "ones", "ones_like", "permute", "pixel_shuffle", "pow", "prelu", "reciprocal",
        "reflection_pad2d", "relu", "relu_", "remainder", "repeat", "repeat_interleave", "reshape",
        "roll", "rsqrt", "rsub", "select", "sigmoid", "silu", "sin", "size", "slice", "softmax",
        "softplus", "split", "split_with_sizes", "sqrt", "squeeze", "stack", "sub", "sum", "t",
        "tanh", "tensor_split", "tensordot", "threshold", "to", "topk", "transpose", "tril", "triu",
        "true_divide", "trunc", "type_as", "unbind", "unsqueeze", "upsample_bilinear2d",
        "upsample_nearest2d", "view", "zero_", "zeros", "zeros_like",
    ),
}
# fmt: on

TRACED_AS = {"conv1d": "_convolution", "conv2d": "_convolution", "conv_transpose1d": "_convolution"}
"""torch.export keeps a convolution's own name; torch.jit.trace, which torch_neuronx.trace runs, records
it as aten::_convolution, the name the documented lists use."""

REJECTED_OPERATORS = {
    **{name: ("FFT operator", "analyze") for name in ("stft", "istft")},
    **{
        name: ("output shape depends on the data", "EMOD025")
        for name in (
            "nonzero",
            "nonzero_numpy",
            "argwhere",
            "masked_select",
            "unique",
            "_unique",
            "_unique2",
            "unique_dim",
            "unique_consecutive",
            "unique_dim_consecutive",
            "_local_scalar_dense",
            "item",
        )  # fmt: skip
    },
}
"""Operators neuronx-cc is documented to reject, beyond every `fft_*` (reason, source)."""

NOT_COMPUTED = {"_assert_tensor_metadata", "sym_size", "sym_numel", "sym_stride", "sym_storage_offset"}
"""Export bookkeeping: checks and shape queries that no compiled graph computes."""


@dataclass
class Operator:
    name: str
    count: int
    status: str
    """"supported" (in a documented list), "unverified" (in none) or "rejected"."""
    reason: str = ""


@dataclass
class BucketCheck:
    network: str
    bucket: int
    operators: list[Operator] = field(default_factory=list)
    error: str | None = None
    """Why the network did not export at this shape (then it cannot be traced for Neuron either)."""
    analyze: dict[str, Any] | None = None
    """torch_neuronx.analyze's report, where the SDK is installed."""

    @property
    def ok(self) -> bool:
        unsupported = self.analyze is not None and bool(self.analyze.get("unsupported_operators"))
        return self.error is None and not unsupported and all(o.status != "rejected" for o in self.operators)


@dataclass
class CheckReport:
    addon: str
    target: str
    torch: str
    analyze: str
    """Whether torch_neuronx.analyze ran, or why not."""
    buckets: list[BucketCheck]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.buckets)


def _operator_name(target: Any) -> str | None:
    """`aten::conv1d` for an ATen operator overload; None for Python glue (getitem) and bookkeeping."""
    schema = getattr(target, "_schema", None)
    if schema is None:
        return None
    name: str = schema.name
    return None if name.split("::")[-1] in NOT_COMPUTED else name


def _dtype_problem(value: Any) -> str | None:
    """Why a node's value (a tensor, or a tuple of them) cannot live on a NeuronCore, if it cannot."""
    values = value if isinstance(value, (tuple, list)) else [value]
    for v in values:
        if not isinstance(v, torch.Tensor):
            continue
        if v.is_complex():
            return f"complex tensor ({v.dtype}) [EVRF004]"
        if v.dtype == torch.float64:
            return "float64 tensor: not a NeuronCore-v2 data type [data-types]"
        if any(not isinstance(size, int) for size in v.shape):
            return f"output shape {tuple(v.shape)} depends on the data [EMOD025]"
    return None


def classify(name: str) -> tuple[str, str]:
    """(status, reason) of one operator by its name."""
    short = name.split("::")[-1]
    if short.startswith(("fft_", "_fft_")):
        return "rejected", "FFT operator [analyze]"
    if short in REJECTED_OPERATORS:
        reason, source = REJECTED_OPERATORS[short]
        return "rejected", f"{reason} [{source}]"
    traced = TRACED_AS.get(short, short)
    sources = [source for source, names in DOCUMENTED_OPERATORS.items() if traced in names]
    if sources:
        via = f"as aten::{traced}, " if traced != short else ""
        return "supported", f"{via}listed by {' and '.join(sources)}"
    return "unverified", "in no documented list"


def graph_operators(program: torch.export.ExportedProgram) -> list[Operator]:
    """The operators of an exported graph, counted, each classified by its name and by the dtypes and
    shapes of what it computes (a complex or float64 result, a shape that depends on the data)."""
    counts: Counter[str] = Counter()
    problems: dict[str, str] = {}
    for node in program.graph.nodes:
        if node.op == "placeholder":
            problem = _dtype_problem(node.meta.get("val"))
            if problem:  # a parameter, buffer or input: rejected before any operator runs
                key = f"input {node.name}"
                counts[key] += 1
                problems[key] = problem
            continue
        if node.op != "call_function":
            continue
        name = _operator_name(node.target)
        if name is None:
            continue
        counts[name] += 1
        problem = _dtype_problem(node.meta.get("val"))
        if problem:
            problems.setdefault(name, problem)
    operators = []
    for name, count in sorted(counts.items()):
        status, reason = ("rejected", problems[name]) if name in problems else classify(name)
        if name in problems and classify(name)[0] == "rejected":
            reason = f"{classify(name)[1]}; {reason}"
        operators.append(Operator(name, count, status, reason))
    return operators


def compiled_network(network: nn.Module) -> nn.Module:
    """The form a network is compiled in (the vocoder's real-only inverse STFT), as the compiler does."""
    form = getattr(network, "compiled_form", None)
    return form() if form else network


def _analyze(network: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, Any] | None:
    """torch_neuronx.analyze where the Neuron SDK is installed; None where it is not."""
    try:
        import torch_neuronx
    except Exception:  # noqa: BLE001 - PyPI's placeholder package raises a plain Exception on import
        return None
    result: dict[str, Any] = torch_neuronx.analyze(network, inputs)
    return result


def analyze_available() -> str:
    try:
        import torch_neuronx  # noqa: F401
    except Exception as err:  # noqa: BLE001 - as above
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"not run: torch_neuronx is not importable ({first[:120]})"
    return "run"


def check_network(name: str, network: nn.Module, bucket: int, analyze: bool) -> BucketCheck:
    """Export one network at one bucket and classify its operators."""
    check = BucketCheck(name, bucket)
    inputs = network.example_inputs(bucket)  # type: ignore[operator]  # what the compiler traces
    try:
        program = torch.export.export(network, tuple(inputs))
    except Exception as err:  # noqa: BLE001 - any export failure is the finding, reported as one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
        check.error = f"torch.export failed: {type(err).__name__}: {reason[:300]}"
        return check
    check.operators = graph_operators(program)
    if analyze:
        check.analyze = _analyze(network, tuple(inputs))
    return check


def check_addon(addon_dir: str | Path, target: str = "neuron", progress: bool = True) -> CheckReport:
    """Every network with buckets at every bucket."""
    if target != "neuron":
        raise ValueError(f"only target 'neuron' has documented operator limits, got '{target}'")
    addon = load_addon(addon_dir)
    analyze = analyze_available()
    jobs = [(spec.name, bucket) for spec in addon.networks.values() for bucket in spec.buckets]
    checks = []
    for name, bucket in tqdm(jobs, desc="check", unit=" shapes", disable=not progress):
        network = compiled_network(addon.network(name))
        checks.append(check_network(name, network, bucket, analyze == "run"))
    return CheckReport(addon.name, target, torch.__version__, analyze, checks)


def format_report(report: CheckReport) -> Iterator[str]:
    """A table per network: its operators as rows, a count column per bucket, and the verdict."""
    yield f"{report.addon}: operators of every network at every bucket (torch {report.torch}, for neuronx-cc)"
    by_network: dict[str, list[BucketCheck]] = {}
    for check in report.buckets:
        by_network.setdefault(check.network, []).append(check)
    for network, checks in by_network.items():
        yield ""
        header = ["operator", *(str(c.bucket) for c in checks), "status", "why"]
        rows: dict[str, list[str]] = {}
        for column, check in enumerate(checks):
            for op in check.operators:
                row = rows.setdefault(op.name, ["", *(["-"] * len(checks)), "", ""])
                row[0] = op.name
                row[1 + column] = str(op.count)
                if op.status == "rejected" or not row[-2]:
                    row[-2], row[-1] = op.status, op.reason
        order = {"rejected": 0, "unverified": 1, "supported": 2}
        table = [header, *sorted(rows.values(), key=lambda r: (order[r[-2]], r[0]))]
        widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
        yield f"{network} (buckets {', '.join(header[1:-2])})"
        for row in table:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            yield "  " + "  ".join([*cells, row[-1]])
        for check in checks:
            if check.error:
                yield f"  at {check.bucket}: {check.error}"
            if check.analyze is not None:
                unsupported = check.analyze.get("unsupported_operators") or []
                kinds = ", ".join(sorted({str(u.get("kind")) for u in unsupported})) or "none"
                yield f"  at {check.bucket}: torch_neuronx.analyze: unsupported {kinds}"
    rejected = sum(1 for c in report.buckets if not c.ok)
    unverified = sorted({o.name for c in report.buckets for o in c.operators if o.status == "unverified"})
    yield ""
    yield f"torch_neuronx.analyze: {report.analyze}"
    if unverified:
        yield f"unverified (in no documented list; may compile): {', '.join(unverified)}"
    if rejected:
        yield f"FAIL: {rejected} of {len(report.buckets)} network shapes would not compile for Neuron"
    else:
        yield f"OK: no documented Neuron rejection in {len(report.buckets)} network shapes"
    yield "sources:"
    yield from (f"  [{key}] {text}" for key, text in SOURCES.items())


def write_json(report: CheckReport, path: Path) -> None:
    data = {**asdict(report), "ok": report.ok}
    for check, entry in zip(report.buckets, data["buckets"], strict=True):
        entry["ok"] = check.ok
    try:
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    except OSError as err:
        raise OutputError(f"{path}: cannot write: {err.strerror}") from None
