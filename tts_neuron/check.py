"""Neuron-readiness without Neuron hardware: the operators each network runs at each of its buckets.

    tts-neuron check --addon DIR [--target neuron] [--json FILE]

neuronx-cc reports an operator it cannot compile only after a long compile on a build host. This check
exports every network with buckets at every bucket (`torch.export`, in the form and with the inputs the
compiler uses), decomposes the graph to core ATen (what torch-xla receives once composite operators are
decomposed: `torch_neuronx.trace` records through torch-xla, not `torch.jit.trace`), and compares each
operator with torch-xla 2.9's lowering table (xla_lowerings.json, its source URL and commit inside).
It flags:
- rejected: FFT operators, complex and float64 tensors, outputs whose shape depends on the data, random
  operators, a split/slice/chunk/narrow along dim 1 of a 2-D tensor (wrong data on torch-neuronx 2.9,
  pytorch/xla#8640), and an operator with no lowering applied to data derived from a parameter or buffer
  (a trace that crashes its process on SDK >= 2.27, aws-neuron-sdk#1265);
- fallback: an operator with no lowering on other data, which torch-xla runs on the CPU at trace time;
- composite: no lowering of its own but a composite kernel (e.g. scalar_tensor: empty, fill_), which
  torch-xla runs as the operators it calls; those are not seen here, so it is a warning, not a pass.

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
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from tts_neuron.addon import load_addon
from tts_neuron.errors import OutputError
from tts_neuron.models import split_safe
from tts_neuron.models.protocols import compiled_form

SOURCES = {
    "xla": "torch-xla's lowering table, codegen/xla_native_functions.yaml (URL and commit in "
    "tts_neuron/xla_lowerings.json)",
    "8640": "pytorch/xla#8640, a known issue of torch-neuronx 2.9 (aws-neuron-sdk archive/appnotes/"
    "torch-neuronx/introducing-pytorch-2-9.rst): a 2-D tensor split along dim 1 gives wrong data",
    "1265": "aws-neuron-sdk#1265: an operator with no XLA lowering on a tensor derived from a parameter or "
    "buffer kills the trace process (SDK >= 2.27; optimum-neuron PR #1124)",
    "analyze": "aws-neuron-sdk frameworks/torch/torch-neuronx/api-reference-guide/inference/"
    "api-torch-neuronx-analyze.rst (its example: aten::fft_fft fails at neuronx-cc)",
    "EVRF004": "aws-neuron-sdk compiler/error-codes/EVRF004.rst ('Complex data types are not supported "
    "on the Neuron device')",
    "data-types": "aws-neuron-sdk about-neuron/arch/neuron-features/data-types.rst (NeuronCore v2 data "
    "types: FP32, TF32, FP16, BF16, FP8, UINT8; no FP64)",
    "EMOD025": "aws-neuron-sdk compiler/error-codes/EMOD025.rst ('Dynamic shape is not supported'), and "
    "api-torch-neuronx-trace.rst: intermediate shapes are fixed at trace time",
    "trace": "aws-neuron-sdk api-torch-neuronx-trace.rst: a traced graph is frozen, so a random operator "
    "draws once at trace time or per call on the device, never as on the CPU",
}
"""Where each rule and table below comes from."""

LOWERED_AS = {"convolution": "convolution_overrideable"}
"""Core ATen operators torch-xla dispatches under another name (its convolution is overrideable)."""

SPLIT_OPERATORS = {"split", "split_with_sizes", "split_copy", "split_with_sizes_copy", "slice",
                   "slice_copy", "chunk", "narrow", "narrow_copy", "tensor_split", "unsafe_split",
                   "unsafe_chunk"}  # fmt: skip
"""Operators that take columns of a tensor: wrong data along dim 1 of a 2-D tensor [8640]."""

RANDOM_OPERATORS = {"bernoulli", "rand", "rand_like", "randn", "randn_like", "randint", "randint_like",
                    "randperm", "normal", "uniform", "exponential", "multinomial", "native_dropout",
                    "random", "poisson"}  # fmt: skip

REJECTED_OPERATORS = {
    **{name: ("FFT operator", "analyze") for name in ("stft", "istft")},
    **{name: ("random operator", "trace") for name in RANDOM_OPERATORS},
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


@cache
def xla_lowered() -> frozenset[str]:
    """The operator names (without overload) that torch-xla lowers, from the stored table."""
    table = json.loads(resources.files("tts_neuron").joinpath("xla_lowerings.json").read_text("utf-8"))
    sections = ("full_codegen", "ir_gen", "supported", "autograd")
    return frozenset(entry.split(".")[0] for section in sections for entry in table[section])


@dataclass
class Operator:
    name: str
    count: int
    status: str
    """"lowered" (in torch-xla's table), "composite" (runs torch's composite kernel), "fallback" (runs on
    the CPU at trace time) or "rejected"."""
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
    """(status, reason) of one operator by its name alone."""
    short = name.split("::")[-1]
    if short.startswith(("fft_", "_fft_")):
        return "rejected", "FFT operator [analyze]"
    if short in REJECTED_OPERATORS:
        reason, source = REJECTED_OPERATORS[short]
        return "rejected", f"{reason} [{source}]"
    lowered = xla_lowered()
    for candidate in (short, f"{short}_copy", LOWERED_AS.get(short, "")):
        if candidate in lowered:
            via = f" as {candidate}" if candidate != short else ""
            return "lowered", f"lowered by torch-xla{via} [xla]"
    if torch._C._dispatch_has_kernel_for_dispatch_key(name, "CompositeExplicitAutograd"):
        return "composite", "no lowering of its own: torch-xla runs torch's composite kernel [xla]"
    return "fallback", "no torch-xla lowering: runs on the CPU at trace time [xla]"


def _splits_2d_columns(node: torch.fx.Node) -> bool:
    """Whether a node takes columns (dim 1) of a 2-D tensor by a split, slice, chunk or narrow."""
    if not node.args or not isinstance(node.args[0], torch.fx.Node):
        return False
    source = node.args[0].meta.get("val")
    if not isinstance(source, torch.Tensor) or source.dim() != 2:
        return False
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    if "slice" in str(node.target) or "narrow" in str(node.target):
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return isinstance(dim, int) and dim in (1, -1)


def split_pattern_ops(program: torch.export.ExportedProgram) -> list[str]:
    """The nodes (by name) that split, slice, chunk or narrow a 2-D tensor along dim 1 [8640]."""
    return [
        node.name
        for node in program.graph.nodes
        if node.op == "call_function"
        and (_operator_name(node.target) or "").split("::")[-1] in SPLIT_OPERATORS
        and _splits_2d_columns(node)
    ]


def _from_weights(program: torch.export.ExportedProgram) -> set[str]:
    """The nodes whose value derives from a parameter, buffer or constant of the network."""
    signature = program.graph_signature
    derived = {*signature.inputs_to_parameters, *signature.inputs_to_buffers}
    derived |= set(getattr(signature, "inputs_to_lifted_tensor_constants", {}))
    for node in program.graph.nodes:
        if node.op == "call_function" and any(arg.name in derived for arg in node.all_input_nodes):
            derived.add(node.name)
    return derived


def graph_operators(program: torch.export.ExportedProgram) -> list[Operator]:
    """The operators of a core-ATen graph, counted, each classified by its name, by the dtypes and shapes
    of what it computes (a complex or float64 result, a shape that depends on the data), by the split
    pattern [8640], and, with no lowering, by whether it touches data derived from the weights [1265]."""
    counts: Counter[str] = Counter()
    problems: dict[str, str] = {}
    weights = _from_weights(program)
    splits = set(split_pattern_ops(program))
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
        if node.name in splits:
            problem = "splits a 2-D tensor along dim 1 [8640]"
        elif problem is None and classify(name)[0] == "fallback" and node.name in weights:
            problem = "no torch-xla lowering, on data derived from the weights [xla] [1265]"
        if problem:
            problems.setdefault(name, problem)
    operators = []
    for name, count in sorted(counts.items()):
        status, reason = ("rejected", problems[name]) if name in problems else classify(name)
        if name in problems and classify(name)[0] == "rejected":
            reason = f"{classify(name)[1]}; {reason}"
        operators.append(Operator(name, count, status, reason))
    return operators


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
        with split_safe():  # the form Neuron's trace records
            program = torch.export.export(network, tuple(inputs))
    except Exception as err:  # noqa: BLE001 - any export failure is the finding, reported as one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
        check.error = f"torch.export failed: {type(err).__name__}: {reason[:300]}"
        return check
    check.operators = graph_operators(program.run_decompositions())  # core ATen, as torch-xla sees it
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
        network = compiled_form(addon.network(name))
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
        order = {"rejected": 0, "fallback": 1, "composite": 2, "lowered": 3}
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
    fallback = sorted({o.name for c in report.buckets for o in c.operators if o.status == "fallback"})
    composite = sorted({o.name for c in report.buckets for o in c.operators if o.status == "composite"})
    yield ""
    yield f"torch_neuronx.analyze: {report.analyze}"
    if fallback:
        yield f"fallback (no torch-xla lowering, CPU at trace time): {', '.join(fallback)}"
    if composite:
        yield f"composite (torch's composite kernel, its operators unchecked): {', '.join(composite)}"
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
