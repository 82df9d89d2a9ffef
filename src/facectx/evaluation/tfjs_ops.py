"""The ops of the TF.js graph interpreter (facectx.evaluation.tfjs_graph), in PyTorch.

Each op takes the graph node (for its attributes) and its evaluated inputs and returns one tensor.
Tensors keep TensorFlow's layout (NHWC activations, HWIO filters); convolutions view them as
channels-last NCHW for PyTorch. Supporting a new network means adding its few ops to OPS here.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


class GraphModelError(ValueError):
    """The model.json or its weights cannot be read, or the graph uses something we do not run."""


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]  # producer node names (data inputs only; control inputs dropped)
    attr: dict


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
