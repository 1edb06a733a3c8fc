"""The model's computation graph as a TensorBoard ``GraphDef``, without TensorFlow.

``torch.utils.tensorboard`` would do this, but importing that package imports
TensorFlow when it is installed (seconds, gigabytes, and a second framework in a torch
process). This traces the model with ``torch.jit.trace`` and writes one node per aten
operation, named by the module it runs in (``CNN/conv1/_convolution``), one node per
parameter and buffer, and the input and output: the shape TensorBoard's Graphs
dashboard shows for torch models.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from tensorboard.compat.proto.attr_value_pb2 import AttrValue
from tensorboard.compat.proto.graph_pb2 import GraphDef
from tensorboard.compat.proto.node_def_pb2 import NodeDef
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.compat.proto.versions_pb2 import VersionDef

_PRODUCER = 22  # the GraphDef producer version TensorBoard expects from torch graphs


def _shape_attr(sizes: Any) -> dict[str, AttrValue]:
    if sizes is None:
        return {}
    dims = [TensorShapeProto.Dim(size=int(d)) for d in sizes]
    return {"_output_shapes": AttrValue(list=AttrValue.ListValue(shape=[TensorShapeProto(dim=dims)]))}


def _sizes(value: torch._C.Value) -> list[int] | None:
    return value.type().sizes() if value.isCompleteTensor() else None


def _scope(root: str, scope_name: str) -> str:
    """``__module.features/__module.features.0`` -> ``Root/features/0``."""
    last = scope_name.split("/")[-1] if scope_name else ""
    parts = [p for p in last.removeprefix("__module").split(".") if p]
    return "/".join([root, *parts])


def model_graph(model: torch.nn.Module, example: torch.Tensor) -> GraphDef:
    """Trace ``model`` (in eval mode, on ``example``) into a GraphDef proto."""
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # jit.trace's deprecation and tracer warnings
            traced = torch.jit.trace(model, example, check_trace=False)
        graph = traced.inlined_graph
    finally:
        model.train(was_training)

    root = type(model).__name__
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    counts: dict[str, int] = {}
    names: dict[str, str] = {}  # value debug name -> node name
    nodes: list[NodeDef] = []
    attr_path: dict[str, str] = {}  # GetAttr outputs -> dotted attribute path

    inputs = [v for v in graph.inputs() if v.type().kind() != "ClassType"]
    for i, value in enumerate(inputs):
        name = f"input/input.{i + 1}"
        names[value.debugName()] = name
        nodes.append(NodeDef(name=name, op="IO Node", attr=_shape_attr(_sizes(value))))

    for node in graph.nodes():
        kind = node.kind()
        if kind == "prim::GetAttr":
            parent = attr_path.get(node.input().debugName(), "")
            path = f"{parent}.{node.s('name')}" if parent else node.s("name")
            attr_path[node.output().debugName()] = path
            if node.output().type().kind() == "TensorType":  # a parameter or buffer
                name = "/".join([root, *path.split(".")])
                names[node.output().debugName()] = name
                shape = tensors[path].shape if path in tensors else None
                nodes.append(NodeDef(name=name, op="Parameter", attr=_shape_attr(shape)))
            continue
        if not kind.startswith("aten::"):
            continue  # constants and list constructions: shown as the op's attributes instead
        op = kind.removeprefix("aten::")
        scope = _scope(root, node.scopeName())
        outputs = list(node.outputs())
        counts[f"{scope}/{op}"] = index = counts.get(f"{scope}/{op}", -1) + 1
        name = f"{scope}/{op}_{index}"
        node_inputs = [names[v.debugName()] for v in node.inputs() if v.debugName() in names]
        for value in outputs:
            names[value.debugName()] = name
        nodes.append(NodeDef(name=name, op=kind, input=node_inputs, attr=_shape_attr(_sizes(outputs[0]))))

    for i, value in enumerate(graph.outputs()):
        source = names.get(value.debugName())
        nodes.append(NodeDef(name=f"output/output.{i + 1}", op="IO Node", input=[source] if source else []))
    return GraphDef(node=nodes, versions=VersionDef(producer=_PRODUCER))


def try_model_graph(model: torch.nn.Module, example: torch.Tensor) -> tuple[Any, str | None]:
    """(GraphDef, None), or (None, why) when the model cannot be traced."""
    try:
        return model_graph(model, example), None
    except Exception as err:  # data-dependent control flow, unsupported ops, ...
        return (
            None,
            f"model graph not written: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}",
        )
