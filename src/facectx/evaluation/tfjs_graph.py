"""A small interpreter of TensorFlow.js *graph* models in PyTorch.

A TF.js graph model is a `model.json` holding a TensorFlow GraphDef as JSON (`modelTopology.node`:
name, op, inputs, attributes) and a `weightsManifest` that lays the values of every `Const` node
end to end in binary shards. Rather than port each network by hand we walk the graph: load the
constants, then evaluate, in dependency order, only the nodes the requested output needs.

Only the ops our networks use are implemented (see OPS); any other op fails with an error that
names it and the node, so supporting a new network means adding its few ops here.

Tensors keep TensorFlow's layout (NHWC activations, HWIO filters) between nodes, so constants,
reductions and broadcasts behave exactly as the graph was written; convolutions view them as
channels-last NCHW for PyTorch (a view, not a copy).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facectx.tfjs import decode_weights


class GraphModelError(ValueError):
    """The model.json or its weights cannot be read, or the graph uses something we do not run."""


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]  # producer node names (data inputs only; control inputs dropped)
    attr: dict


# ---------------------------------------------------------------------------------------------
# Reading model.json (its weight shards: facectx.tfjs)


def _producer(name: str) -> str:
    """'conv/BiasAdd:0' -> 'conv/BiasAdd'. Only single-output ops are supported, so ':k' with
    k > 0 would mean an op we do not implement; catch it rather than read the wrong tensor."""
    node, _, index = name.partition(":")
    if index not in ("", "0"):
        raise GraphModelError(f"input {name!r} reads output {index} of a multi-output op, which is not supported")
    return node


def _parse_nodes(topology: dict) -> dict[str, Node]:
    nodes = {}
    for raw in topology.get("node", []):
        inputs = tuple(_producer(i) for i in raw.get("input", []) if not i.startswith("^"))
        nodes[raw["name"]] = Node(raw["name"], raw["op"], inputs, raw.get("attr", {}))
    return nodes


# ---------------------------------------------------------------------------------------------
# Attribute helpers (GraphDef JSON encodes strings in base64, integers as strings)


def _attr_str(node: Node, key: str, default: str | None = None) -> str:
    if key not in node.attr:
        if default is None:
            raise GraphModelError(f"node {node.name!r} ({node.op}) has no attribute {key!r}")
        return default
    return base64.b64decode(node.attr[key]["s"]).decode()


def _attr_ints(node: Node, key: str, default: list[int]) -> list[int]:
    values = node.attr.get(key, {}).get("list", {}).get("i")
    return [int(v) for v in values] if values else default


def _attr_strs(node: Node, key: str) -> list[str]:
    return [base64.b64decode(s).decode() for s in node.attr.get(key, {}).get("list", {}).get("s", [])]


def _attr_bool(node: Node, key: str) -> bool:
    return bool(node.attr.get(key, {}).get("b", False))


# ---------------------------------------------------------------------------------------------
# Ops. Each takes the node and its evaluated inputs and returns one tensor.


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: output ceil(size / stride), and when the total
    padding is odd the extra pixel goes after (bottom/right) -- unlike PyTorch's symmetric pad,
    which would shift every strided convolution by half a pixel."""
    out = -(-size // stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _conv_geometry(node: Node, x: torch.Tensor, kernel_hw: tuple[int, int]):
    """(NCHW view of x, stride, dilation, symmetric padding) for a Conv2D-like node.

    Padding as TF computes it; the symmetric part is left to the convolution (cheap), and only
    an asymmetric remainder, if any, is applied here with F.pad (a copy).
    """
    if _attr_str(node, "data_format", "NHWC") != "NHWC":
        raise GraphModelError(f"node {node.name!r}: only NHWC data_format is supported")
    strides = _attr_ints(node, "strides", [1, 1, 1, 1])
    dilations = _attr_ints(node, "dilations", [1, 1, 1, 1])
    stride, dilation = (strides[1], strides[2]), (dilations[1], dilations[2])
    padding = _attr_str(node, "padding")
    if padding == "SAME":
        top, bottom = _same_padding(x.shape[1], kernel_hw[0], stride[0], dilation[0])
        left, right = _same_padding(x.shape[2], kernel_hw[1], stride[1], dilation[1])
    elif padding == "VALID":
        top = bottom = left = right = 0
    elif padding == "EXPLICIT":  # [n_before, n_after, h_before, h_after, w_before, w_after, c_before, c_after]
        explicit = _attr_ints(node, "explicit_paddings", [0] * 8)
        top, bottom, left, right = explicit[2:6]
    else:
        raise GraphModelError(f"node {node.name!r}: padding {padding!r} is not supported")
    nchw = x.permute(0, 3, 1, 2)  # channels-last NCHW view of the NHWC tensor: no copy
    symmetric = (min(top, bottom), min(left, right))
    extra = (left - symmetric[1], right - symmetric[1], top - symmetric[0], bottom - symmetric[0])
    if any(extra):
        nchw = F.pad(nchw, extra)
    return nchw, stride, dilation, symmetric


def _conv2d(node: Node, x: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
    # TF filter HWIO -> PyTorch OIHW
    nchw, stride, dilation, padding = _conv_geometry(node, x, tuple(filt.shape[:2]))
    y = F.conv2d(nchw, filt.permute(3, 2, 0, 1), stride=stride, dilation=dilation, padding=padding)
    return y.permute(0, 2, 3, 1)


def _depthwise_conv2d(node: Node, x: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
    # TF filter (H, W, in, multiplier); output channel c*multiplier + m -> PyTorch (in*mult, 1, H, W), groups=in
    kh, kw, channels, multiplier = filt.shape
    nchw, stride, dilation, padding = _conv_geometry(node, x, (kh, kw))
    weight = filt.permute(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw)
    y = F.conv2d(nchw, weight, stride=stride, dilation=dilation, padding=padding, groups=channels)
    return y.permute(0, 2, 3, 1)


def _mean(node: Node, x: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    dims = [int(a) % x.dim() for a in axes.reshape(-1).tolist()]
    return x.mean(dim=dims, keepdim=_attr_bool(node, "keep_dims"))


def _activation(name: str, node: Node) -> Callable[[torch.Tensor], torch.Tensor]:
    functions = {"Relu": torch.relu, "Relu6": lambda t: t.clamp(0.0, 6.0)}
    if name not in functions:
        raise GraphModelError(f"node {node.name!r}: fused op {name!r} is not supported")
    return functions[name]


def _fused_matmul(node: Node, a: torch.Tensor, b: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
    """Grappler's MatMul + BiasAdd (+ activation) fusion."""
    a = a.transpose(-1, -2) if _attr_bool(node, "transpose_a") else a
    b = b.transpose(-1, -2) if _attr_bool(node, "transpose_b") else b
    y = a @ b
    fused = _attr_strs(node, "fused_ops")
    if fused[:1] != ["BiasAdd"] or len(args) != 1:
        raise GraphModelError(f"node {node.name!r}: fused ops {fused} with {len(args)} extra inputs are not supported")
    y = y + args[0]
    for name in fused[1:]:
        y = _activation(name, node)(y)
    return y


def _matmul(node: Node, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.transpose(-1, -2) if _attr_bool(node, "transpose_a") else a
    b = b.transpose(-1, -2) if _attr_bool(node, "transpose_b") else b
    return a @ b


OPS: dict[str, Callable[..., torch.Tensor]] = {
    "Identity": lambda node, x: x,
    "Add": lambda node, a, b: a + b,
    "AddV2": lambda node, a, b: a + b,
    "BiasAdd": lambda node, a, b: a + b,  # NHWC: the bias broadcasts over the last axis
    "Sub": lambda node, a, b: a - b,
    "Mul": lambda node, a, b: a * b,
    "Minimum": lambda node, a, b: torch.minimum(a, b),
    "Maximum": lambda node, a, b: torch.maximum(a, b),
    "Relu": lambda node, x: torch.relu(x),
    "Relu6": lambda node, x: x.clamp(0.0, 6.0),
    "Sigmoid": lambda node, x: torch.sigmoid(x),
    "Softmax": lambda node, x: torch.softmax(x, dim=-1),
    "Reshape": lambda node, x, shape: x.reshape([int(s) for s in shape.tolist()]),
    "Mean": _mean,
    "Conv2D": _conv2d,
    "DepthwiseConv2dNative": _depthwise_conv2d,
    "MatMul": _matmul,
    "_FusedMatMul": _fused_matmul,
}


# ---------------------------------------------------------------------------------------------


class TfjsGraphModel:
    """A TF.js graph model, evaluated with PyTorch ops.

        model = TfjsGraphModel.load("faceres.json")
        features = model({"input_1": nhwc_float_tensor}, "global_pooling/Mean")

    Inference only: call it under torch.inference_mode() (it does not build modules or
    parameters; constants are plain tensors).
    """

    def __init__(self, nodes: dict[str, Node], constants: dict[str, torch.Tensor], source: str):
        self.nodes = nodes
        self.constants = constants
        self.source = source  # the model.json, for error messages
        self._plans: dict[str, list[Node]] = {}

    @classmethod
    def load(cls, model_json: str | Path) -> TfjsGraphModel:
        path = Path(model_json)
        try:
            spec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise GraphModelError(f"cannot read TF.js model {path}: {err}") from err
        if spec.get("format") != "graph-model" or "modelTopology" not in spec:
            raise GraphModelError(
                f"{path} is not a TF.js graph model (format {spec.get('format')!r}); layers models are not supported"
            )
        nodes = _parse_nodes(spec["modelTopology"])
        weights = decode_weights(spec.get("weightsManifest", []), path.parent, GraphModelError, path)
        missing = [n.name for n in nodes.values() if n.op == "Const" and n.name not in weights]
        if missing:
            raise GraphModelError(f"{path}: Const nodes without values in the weights manifest: {missing[:5]}")
        constants = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in weights.items()}
        return cls(nodes, constants, str(path))

    def to(self, device: str | torch.device) -> TfjsGraphModel:
        self.constants = {name: value.to(device) for name, value in self.constants.items()}
        return self

    def plan(self, output: str) -> list[Node]:
        """The nodes `output` depends on, each after its inputs (cached per output)."""
        if output in self._plans:
            return self._plans[output]
        if output not in self.nodes:
            raise GraphModelError(f"{self.source} has no node {output!r}")
        order: list[Node] = []
        state: dict[str, str] = {}  # name -> "visiting" | "done"
        stack = [(output, False)]
        while stack:  # iterative DFS: graphs can be deeper than Python's recursion limit
            name, inputs_done = stack.pop()
            if inputs_done:
                state[name] = "done"
                order.append(self.nodes[name])
                continue
            if state.get(name) == "done":
                continue
            if state.get(name) == "visiting":
                raise GraphModelError(f"{self.source}: the graph has a cycle through {name!r}")
            if name not in self.nodes:
                raise GraphModelError(f"{self.source}: an input names node {name!r}, which does not exist")
            state[name] = "visiting"
            stack.append((name, True))
            stack.extend((i, False) for i in reversed(self.nodes[name].inputs) if state.get(i) != "done")
        unsupported = sorted(
            {f"{n.op} (node {n.name!r})" for n in order if n.op not in OPS and n.op not in ("Const", "Placeholder")}
        )
        if unsupported:
            raise GraphModelError(
                f"{self.source}: ops not supported by facectx.evaluation.tfjs_graph: {', '.join(unsupported)}"
            )
        self._plans[output] = order
        return order

    def __call__(self, inputs: dict[str, torch.Tensor], output: str, also: tuple[str, ...] = ()) -> torch.Tensor:
        """The value of node `output`. With `also`, return {name: value} for `output` and those
        nodes (which must be on the way to `output`), from one pass."""
        order = self.plan(output)
        kept: dict[str, torch.Tensor] = {}
        # Drop each activation after its last reader, so a batch holds a few layers, not all of them.
        last_read = {name: step for step, node in enumerate(order) for name in node.inputs}
        values: dict[str, torch.Tensor] = {}
        for step, node in enumerate(order):
            if node.op == "Const":
                values[node.name] = self.constants[node.name]
            elif node.op == "Placeholder":
                if node.name not in inputs:
                    raise GraphModelError(
                        f"{self.source}: output {output!r} needs input {node.name!r}; given {sorted(inputs)}"
                    )
                values[node.name] = inputs[node.name]
            else:
                values[node.name] = OPS[node.op](node, *(values[i] for i in node.inputs))
                if node.name in also:
                    kept[node.name] = values[node.name]
                for name in set(node.inputs):
                    if last_read[name] == step:
                        del values[name]
        if also:
            missing = sorted(set(also) - set(kept))
            if missing:
                raise GraphModelError(f"{self.source}: nodes {missing} are not on the way to {output!r}")
            return {**kept, output: values[output]}
        return values[output]
