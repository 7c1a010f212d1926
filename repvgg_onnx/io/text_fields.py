"""Text in a model that is not valid UTF-8, named where it is.

ONNX's names, op types, domains, doc strings and metadata are protobuf ``string`` fields of a
proto2 schema, which nothing checks on parsing: a damaged or hand-made file can hold any bytes
there, and ``onnx.checker`` accepts them. Python's protobuf then hands such a field over as
``bytes``, not ``str``; it is used like any name until something writes it back into a proto
(graphsurgeon's exporter, ``onnx.helper``) or joins it with text, far from the cause.

Walking every field of every model up front costs 60 ms on a 16,000-node model, so nothing is
walked while things work: :func:`text_errors` turns the failure such a field causes into a
:class:`~repvgg_onnx.errors.ModelLoadError` naming the field (:func:`invalid_text`), and lets
any other failure through unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import onnx

from repvgg_onnx.errors import ModelLoadError

_GRAPH = onnx.AttributeProto.GRAPH
_GRAPHS = onnx.AttributeProto.GRAPHS


#: How text that is not UTF-8 makes things fail: written back into a proto, or used as text.
_TEXT_FAILURES = (UnicodeDecodeError, TypeError)


@contextlib.contextmanager
def text_errors(*models: tuple[onnx.ModelProto, str]) -> Iterator[None]:
    """Run the body; if it fails as text that is not valid UTF-8 makes things fail (a
    ``UnicodeDecodeError``, or a ``TypeError`` of ``bytes`` where ``str`` was expected, or an
    error raised from one) and one of ``models`` (each with the label its error names it by)
    holds such text, raise a :class:`ModelLoadError` saying where instead."""
    try:
        yield
    except Exception as error:
        if not isinstance(error, _TEXT_FAILURES) and not isinstance(
            error.__cause__, _TEXT_FAILURES
        ):
            raise
        for model, label in models:
            where = invalid_text(model)
            if where is not None:
                raise ModelLoadError(
                    f"{label}: holds text that is not valid UTF-8 ({where}); the file is "
                    "damaged or was not written by an ONNX exporter."
                ) from error
        raise


def invalid_text(model: onnx.ModelProto) -> str | None:
    """Which field of ``model`` holds text that is not valid UTF-8, or ``None``. Reads every
    text field but the tensors' payloads (``string`` tensors hold bytes by design)."""
    model_texts = (model.producer_name, model.producer_version, model.domain, model.doc_string)
    if _has_bytes(model_texts) or _has_bytes(_entries(model.metadata_props)):
        return "the model's producer, domain, doc string or metadata"
    if _has_bytes(opset.domain for opset in model.opset_import):
        return "an opset's domain"
    for index, function in enumerate(model.functions):
        where = f"local function {index}"
        texts = (function.name, function.domain, function.doc_string, *function.attribute)
        if _has_bytes(texts) or _has_bytes(function.input) or _has_bytes(function.output):
            return f"the name, domain or interface of {where}"
        found = _in_nodes(function.node, where)
        if found is not None:
            return found
    return _in_graph(model.graph, "the graph")


def _in_graph(graph: onnx.GraphProto, where: str) -> str | None:
    if _has_bytes((graph.name, graph.doc_string)):
        return f"the name or doc string of {where}"
    for kind, values in (
        ("input", graph.input),
        ("output", graph.output),
        ("value_info", graph.value_info),
        ("initializer", graph.initializer),
        ("sparse initializer", (sparse.values for sparse in graph.sparse_initializer)),
    ):
        for index, value in enumerate(values):
            if _has_bytes((value.name, value.doc_string)):
                return f"the name or doc string of {kind} {index} of {where}"
    return _in_nodes(graph.node, where)


def _in_nodes(nodes: Iterable[onnx.NodeProto], where: str) -> str | None:
    for index, node in enumerate(nodes):
        node_where = f"node {index} of {where}"
        texts = (node.name, node.op_type, node.domain, node.doc_string)
        if _has_bytes(texts) or _has_bytes(node.input) or _has_bytes(node.output):
            return f"the name, type or a tensor name of {node_where}"
        for attribute in node.attribute:
            if _has_bytes((attribute.name, attribute.ref_attr_name, attribute.doc_string)):
                return f"an attribute's name of {node_where}"
            bodies = [attribute.g] if attribute.type == _GRAPH else []
            bodies += attribute.graphs if attribute.type == _GRAPHS else []
            for body in bodies:
                found = _in_graph(body, f"a body of {node_where}")
                if found is not None:
                    return found
    return None


def _entries(properties: Iterable[onnx.StringStringEntryProto]) -> Iterator[object]:
    for entry in properties:
        yield entry.key
        yield entry.value


def _has_bytes(texts: Iterable[object]) -> bool:
    return any(type(text) is bytes for text in texts)
