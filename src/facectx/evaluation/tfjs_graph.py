"""A small interpreter of TensorFlow.js *graph* models in PyTorch.

A TF.js graph model is a `model.json` holding a TensorFlow GraphDef as JSON (`modelTopology.node`:
name, op, inputs, attributes) and a `weightsManifest` that lays the values of every `Const` node
end to end in binary shards. Rather than port each network by hand we walk the graph: load the
constants, then evaluate, in dependency order, only the nodes the requested output needs.

Only the ops our networks use are implemented (see OPS); any other op fails with an error that
names it and the node; supporting a new network means adding its few ops to facectx.evaluation.tfjs_ops.

Tensors keep TensorFlow's layout (NHWC activations, HWIO filters) between nodes, so constants,
reductions and broadcasts behave exactly as the graph was written; convolutions view them as
channels-last NCHW for PyTorch (a view, not a copy).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from facectx.evaluation.tfjs_ops import OPS, GraphModelError, Node
from facectx.tfjs import decode_weights

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
