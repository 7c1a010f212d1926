"""The peer tools' own linear-fold tests, run against our ``fuse_graph``.

Every case of :mod:`peer_graphs` is checked for the outcome the affine-region pass is meant to
have (not for what the peers do; where a peer is wrong, the case says so): the exact op
histogram after fusion, the same outputs as the original in onnxruntime on random inputs
(compared here, never through the tool's own verification), unchanged graph input and output
names, and an input model left untouched. A must-not-fold case keeps its histogram; a
training-mode model is refused as a whole.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from peer_graphs import ALL_CASES, RAISES, UNCHANGED, PeerCase

from repvgg_onnx.errors import UnsupportedModelError
from repvgg_onnx.pipeline.fuse_model import fuse_graph


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def feeds_for(model: onnx.ModelProto, case: PeerCase, seed: int = 1) -> dict[str, np.ndarray]:
    """Random normal data for every real graph input (an initializer listed as an input keeps
    its stored value); the case's own values for inputs noise cannot stand for."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        if value.name in case.feeds:
            feeds[value.name] = case.feeds[value.name]
            continue
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 2 for d in tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if tensor_type.elem_type == TensorProto.BOOL:
            feeds[value.name] = np.zeros(dims, dtype=bool)
        else:
            feeds[value.name] = rng.normal(0, 1, dims).astype(dtype)
    return feeds


def override_feeds(model: onnx.ModelProto, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """New values for initializers that are also graph inputs (positive, so a variance stays
    valid): a model that treated them as constants computes something else."""
    rng = np.random.default_rng(7)
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return {
        name: rng.uniform(0.5, 2.0, stored[name].shape).astype(stored[name].dtype) for name in names
    }


def assert_same_outputs(
    expected: list[np.ndarray], actual: list[np.ndarray], rtol: float, what: str
) -> None:
    assert len(actual) == len(expected), what
    for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
        assert got.shape == want.shape, f"{what}: output {index} shape"
        assert got.dtype == want.dtype, f"{what}: output {index} dtype"
        if want.dtype == bool:
            np.testing.assert_array_equal(got, want, err_msg=what)
            continue
        want64, got64 = want.astype(np.float64), got.astype(np.float64)
        finite = np.abs(want64[np.isfinite(want64)])
        scale = max(float(finite.max()) if finite.size else 0.0, 1e-6)
        np.testing.assert_allclose(
            got64, want64, rtol=rtol, atol=rtol * scale, equal_nan=True, err_msg=what
        )


def io_names(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    return [v.name for v in model.graph.input], [v.name for v in model.graph.output]


@pytest.mark.parametrize("case", ALL_CASES, ids=[case.id for case in ALL_CASES])
def test_peer_case(case: PeerCase) -> None:
    model = case.build()
    before = model.SerializeToString()
    feeds = feeds_for(model, case)
    expected_outputs = run(model, feeds)

    if case.expect == RAISES:
        with pytest.raises(UnsupportedModelError):
            fuse_graph(model)
        assert model.SerializeToString() == before, "the input model was modified"
        return

    fused, outcome = fuse_graph(model)
    assert model.SerializeToString() == before, "the input model was modified"

    if case.expect is UNCHANGED:
        allowed = [op_histogram(model)]
    elif isinstance(case.expect, dict):
        allowed = [case.expect]
    else:
        allowed = list(case.expect)
    histogram = op_histogram(fused)
    assert histogram in allowed, (
        f"op histogram {histogram}, expected {' or '.join(map(str, allowed))} "
        f"(before: {op_histogram(model)}; fused: {[b.describe() for b in outcome.fused]}; "
        f"skipped: {[s.reason for s in outcome.skipped]})"
    )

    assert io_names(fused) == io_names(model), "graph input/output names changed"
    assert_same_outputs(expected_outputs, run(fused, feeds), case.rtol, "random inputs")
    if case.overrides:
        overridden = {**feeds, **override_feeds(model, case.overrides)}
        assert_same_outputs(
            run(model, overridden), run(fused, overridden), case.rtol, "overridden initializers"
        )
    onnx.checker.check_model(fused, full_check=True)
    if case.check is not None:
        case.check(fused)

    for skip in outcome.skipped:
        if case.blame and skip.node in case.blame:
            assert any(name in skip.reason for name in case.blame), (
                f"skip of {skip.node!r} names none of {case.blame}: {skip.reason}"
            )


def test_case_ids_are_unique_and_name_a_peer() -> None:
    ids = [case.id for case in ALL_CASES]
    assert len(ids) == len(set(ids))
    prefixes = ("onnxoptimizer-", "onnxscript-", "onnxslim-", "onnxsim-", "ort-", "target-")
    assert all(case_id.startswith(prefixes) for case_id in ids)
