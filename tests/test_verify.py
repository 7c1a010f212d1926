"""verify.py: the comparison rule, input synthesis, and sessions for models of any size."""

from __future__ import annotations

import importlib

import numpy as np
import onnx
import pytest

from helpers import REPVGG_BRANCHES, block_model, fuse_model
from repvgg_onnx import io
from repvgg_onnx.errors import InputSpecError
from repvgg_onnx.io import model_tensors
from repvgg_onnx.verification.compare import (
    RunResult,
    Tolerances,
    compare_output,
    compare_runs,
    verify_models,
)
from repvgg_onnx.verification.inputs import parse_input_shapes, resolve_input_shapes


def test_pass_iff_within_atol_plus_rtol():
    reference = np.array([1.0, 100.0, -10.0], np.float32)
    inside = reference + np.array([1e-5, 1e-2, 1e-3], np.float32)
    outside = reference + np.array([0, 0, 3e-3], np.float32)
    assert compare_output("y", reference, inside, atol=1e-5, rtol=1e-4).passed
    result = compare_output("y", reference, outside, atol=1e-5, rtol=1e-4)
    assert not result.passed
    assert result.max_abs_error == pytest.approx(3e-3, rel=1e-3)
    assert result.required_atol == pytest.approx(3e-3 - 1e-3, rel=1e-2)


def test_default_atol_is_relative_to_the_output_scale():
    reference = np.array([1000.0, 0.0], np.float32)
    candidate = np.array([1000.0, 5e-3], np.float32)  # 5e-6 of the scale, at a zero
    result = compare_output("y", reference, candidate, atol=None, rtol=None)
    assert result.passed and result.atol == pytest.approx(1e-2)
    assert not compare_output("y", reference, candidate * [1, 3], atol=None, rtol=None).passed


def test_float16_outputs_get_looser_defaults():
    reference = np.array([1.0, 2.0], np.float16)
    candidate = np.array([1.004, 2.0], np.float16)
    assert compare_output("y", reference, candidate, atol=None, rtol=None).passed
    assert not compare_output("y", reference, candidate, atol=None, rtol=1e-4).passed


def test_nan_or_shape_mismatch_fails():
    reference = np.array([1.0, np.nan], np.float32)
    assert compare_output("y", reference, reference.copy(), None, None).passed
    assert not compare_output("y", reference, np.array([1.0, 2.0], np.float32), None, None).passed
    assert not compare_output("y", np.ones(3), np.ones(4), None, None).passed
    assert (
        compare_output("y", np.ones(3), np.ones(4), None, None).to_dict()["max_abs_error"] is None
    )


def test_cosine_of_huge_or_infinite_outputs_is_exact_and_silent():
    huge = np.array([3e38, -3e38, 1.0], np.float32)
    with np.errstate(over="raise"):  # an overflow in the sums of squares would raise here
        same = compare_output("y", huge, huge.copy(), atol=None, rtol=None)
        opposite = compare_output("y", huge, -huge, atol=None, rtol=None)
        infinite = compare_output("y", np.array([np.inf, 1.0]), np.array([np.inf, 1.0]), None, None)
    assert same.cosine_similarity == pytest.approx(1.0)
    assert opposite.cosine_similarity == pytest.approx(-1.0)
    assert infinite.cosine_similarity == pytest.approx(1.0)


def test_input_shapes():
    model = block_model(REPVGG_BRANCHES, batch="N")
    assert resolve_input_shapes(model) == {"x": [1, 4, 8, 8]}
    assert resolve_input_shapes(model, {"x": [3, 4, 8, 8]}) == {"x": [3, 4, 8, 8]}
    assert parse_input_shapes(["a:b:1x2"]) == {"a:b": [1, 2]}
    with pytest.raises(InputSpecError, match="does not fit"):
        resolve_input_shapes(model, {"x": [1, 5, 8, 8]})


def test_verification_of_models_too_large_for_one_protobuf(monkeypatch):
    """Over the limit, sessions load through a temporary file with external data."""
    model = block_model(REPVGG_BRANCHES)
    fused, _ = fuse_model(model)
    monkeypatch.setattr(model_tensors, "INLINE_LIMIT_BYTES", 100)
    assert io.needs_external_data(model)
    result = verify_models(model, fused, seed=3)
    assert result.passed and result.outputs[0].max_abs_error > 0


def test_progress_hears_about_every_batch():
    model = block_model(REPVGG_BRANCHES, batch="N")
    fused, _ = fuse_model(model)
    heard: list[str] = []
    result = verify_models(model, fused, batches=3, progress=heard.append)
    roles = ("original", "fused")
    assert result.batches == 3
    assert heard == [f"{role} model, batch {i}/3" for role in roles for i in (1, 2, 3)]


def test_the_two_sessions_never_coexist(monkeypatch):
    """A model of several GB is held in onnxruntime once at a time: the reference's session
    is gone before the candidate's is made."""
    verify = importlib.import_module(
        "repvgg_onnx.verification.compare"
    )  # the package's `verify` is api's
    live: list[str] = []
    most = []

    class Tracked:
        def __init__(self, session, role):
            self._session, self._role = session, role
            live.append(role)
            most.append(len(live))

        def __getattr__(self, name):
            return getattr(self._session, name)

        def __del__(self):
            live.remove(self._role)

    create = verify.create_session
    monkeypatch.setattr(verify, "create_session", lambda m, role: Tracked(create(m, role), role))
    model = block_model(REPVGG_BRANCHES, batch="N")
    fused, _ = fuse_model(model)
    result = verify_models(model, fused, batches=2)
    assert result.passed and result.batches == 2
    assert most == [1, 1] and live == []


def _runs(*batches: float) -> RunResult:
    """A run of one scalar output ``s`` over ``batches`` (its values), inputs left out."""
    return RunResult(({},) * len(batches), tuple({"s": np.float32(v)} for v in batches))


def test_a_scalar_output_is_compared_in_every_batch():
    """A scalar (a loss, a global score) that differs only in the second batch fails: every
    batch's value counts, not the first batch's alone."""
    tolerances = Tolerances()
    [same] = compare_runs(_runs(1.0, 2.0), _runs(1.0, 2.0), [("s", "s")], tolerances)
    [differs] = compare_runs(_runs(1.0, 2.0), _runs(1.0, 5.0), [("s", "s")], tolerances)
    assert same.passed and not differs.passed
    assert differs.max_abs_error == pytest.approx(3.0)


def test_the_cosine_of_outputs_that_are_all_zero():
    """Two all-zero outputs point the same way (1.0); zero against anything else is 0.0,
    never a NaN from dividing by a zero norm."""
    zeros, ones = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    assert compare_output("y", zeros, zeros, None, None).cosine_similarity == 1.0
    assert compare_output("y", zeros, ones, None, None).cosine_similarity == 0.0


@pytest.mark.parametrize(
    "tolerances",
    [{"atol": -1.0}, {"rtol": float("nan")}, {"output_atol": {"y": -0.5}}],
    ids=["negative-atol", "nan-rtol", "negative-per-output"],
)
def test_a_tolerance_that_is_not_a_number_at_least_0_is_refused(tolerances):
    with pytest.raises(InputSpecError, match="must be a number >= 0"):
        Tolerances(**tolerances)


def test_a_tolerance_for_an_output_the_reference_lacks_is_refused():
    with pytest.raises(InputSpecError, match=r"a tolerance is given for \['z'\]"):
        Tolerances(output_rtol={"z": 0.1}).check_names(["y"])


def _relu_or_abs(op: str, inputs: tuple[str, ...] = ("x",)) -> onnx.ModelProto:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node(op, ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2, 3]) for n in inputs],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_given_feeds_are_the_inputs_verified_on():
    """``Relu`` and ``Abs`` agree on non-negative inputs only: given those, they pass (random
    inputs would have negatives)."""
    feeds = {"x": np.abs(np.random.default_rng(0).normal(size=(2, 3))).astype(np.float32)}
    relu, absolute = _relu_or_abs("Relu"), _relu_or_abs("Abs")
    assert verify_models(relu, absolute, feeds=feeds).passed
    assert not verify_models(relu, absolute).passed


def test_batches_must_be_at_least_one():
    with pytest.raises(InputSpecError, match="at least 1, not 0"):
        verify_models(_relu_or_abs("Relu"), _relu_or_abs("Relu"), batches=0)


def test_models_whose_inputs_differ_in_name_and_count_cannot_be_compared():
    with pytest.raises(InputSpecError, match="the models' inputs differ"):
        verify_models(_relu_or_abs("Relu"), _relu_or_abs("Relu", ("a", "b")))


def test_random_float_inputs_are_signed_and_fractional():
    """Seeded normal floats: negatives and fractions, so ``Relu`` and ``Abs`` (or a rounding)
    cannot pass for one another."""
    from repvgg_onnx.verification.inputs import synthesize_inputs

    [x] = synthesize_inputs(_relu_or_abs("Relu"), {"x": [2, 3]}, seed=0).values()
    assert x.dtype == np.float32 and (x < 0).any() and (x != np.round(x)).any()


def test_an_input_shape_too_large_to_make_is_refused():
    from repvgg_onnx.verification.inputs import MAX_INPUT_ELEMENTS, synthesize_inputs

    with pytest.raises(InputSpecError, match="give a smaller shape for it"):
        synthesize_inputs(_relu_or_abs("Relu"), {"x": [MAX_INPUT_ELEMENTS + 1]}, seed=0)


def test_inputs_files_that_do_not_fit_the_model_are_refused(tmp_path):
    from repvgg_onnx.verification.inputs import check_feeds, load_feeds

    one_input, two_inputs = _relu_or_abs("Relu"), _relu_or_abs("Relu", ("x", "b"))
    array = np.ones((2, 3), np.float32)
    np.save(tmp_path / "x.npy", array)
    assert list(load_feeds(tmp_path / "x.npy", one_input)) == ["x"]
    with pytest.raises(InputSpecError, match=r"an \.npy file holds one array, and the model has 2"):
        load_feeds(tmp_path / "x.npy", two_inputs)
    with pytest.raises(InputSpecError, match=r"missing \['b'\], unexpected \['c'\]"):
        check_feeds(two_inputs, {"x": array, "c": array})
    with pytest.raises(InputSpecError, match="is float64, the model wants float32"):
        check_feeds(one_input, {"x": array.astype(np.float64)})


def test_a_candidate_that_fails_where_the_reference_ran_is_blamed_not_the_inputs():
    """The reference ran on these inputs, so the candidate's failure is its own: the error says
    so, and does not ask for other input sizes."""
    from repvgg_onnx.errors import ModelRunError

    broken = _relu_or_abs("Relu")
    broken.graph.node.insert(0, onnx.helper.make_node("Reshape", ["x", "bad"], ["x6"]))
    broken.graph.node[1].input[0] = "x6"
    broken.graph.initializer.append(onnx.numpy_helper.from_array(np.array([4, 4]), "bad"))
    with pytest.raises(ModelRunError, match="on the inputs the other model ran on") as failure:
        verify_models(_relu_or_abs("Relu"), broken)
    assert failure.value.hint is None


def test_the_api_refuses_verify_calls_that_cannot_mean_anything(tmp_path, monkeypatch):
    """Reference outputs with options that need a model A; no model B and no reference
    outputs; saving outputs into a folder that does not exist (refused before anything runs)."""
    import repvgg_onnx
    from repvgg_onnx.errors import ModelSaveError

    model = _relu_or_abs("Relu")
    golden = tmp_path / "golden.npz"
    with pytest.raises(InputSpecError, match="with reference outputs, the inputs are the saved"):
        repvgg_onnx.verify(model, reference_outputs=golden, input_shapes={"x": [2, 3]})
    with pytest.raises(InputSpecError, match="verify needs two models"):
        repvgg_onnx.verify(model)
    monkeypatch.setattr(repvgg_onnx.api, "isolated", lambda *a, **k: pytest.fail("it ran"))
    with pytest.raises(ModelSaveError, match="does not exist"):
        repvgg_onnx.verify(model, model, save_outputs=tmp_path / "missing" / "golden.npz")


def test_fuse_tells_when_it_chooses_functions_to_inline():
    from test_functions import repvgg_and_activation_model

    import repvgg_onnx

    heard: list[str] = []
    repvgg_onnx.fuse(repvgg_and_activation_model(), verify=False, progress=heard.append)
    assert "choosing the local functions to inline" in heard
    heard.clear()
    repvgg_onnx.fuse(_relu_or_abs("Relu"), verify=False, progress=heard.append)
    assert "choosing the local functions to inline" not in heard


def test_fuse_in_memory_verifies_by_default():
    """No output path: the fused model is still checked in onnxruntime before it is returned."""
    import repvgg_onnx

    result = repvgg_onnx.fuse(block_model(REPVGG_BRANCHES))
    assert result.verification is not None and result.verification.passed
    assert repvgg_onnx.fuse(block_model(REPVGG_BRANCHES), verify=False).verification is None


def test_an_original_onnxruntime_cannot_run_is_not_blamed_on_fuse():
    """An int32 conv weight passes the load-time checker, but onnxruntime refuses the model:
    ``fuse``'s verification says the original cannot run (the input's fault), not that the
    fused model is a bug of ours."""
    import repvgg_onnx
    from repvgg_onnx.errors import ModelRunError

    model = block_model(REPVGG_BRANCHES)
    weight = model.graph.initializer[0]
    as_int = onnx.numpy_helper.to_array(weight).astype(np.int32)
    weight.CopyFrom(onnx.numpy_helper.from_array(as_int, weight.name))
    with pytest.raises(ModelRunError, match="cannot load the original model") as failure:
        repvgg_onnx.fuse(model)
    assert failure.value.role == "original"
