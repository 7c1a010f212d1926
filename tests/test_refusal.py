"""One ``Refusal`` type for every skip: readers', planning helpers' and passes'."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from repvgg_onnx.algebra.form import IncompatibleBranchesError, NotComposableError
from repvgg_onnx.algebra.linear_forms import channel_affine
from repvgg_onnx.passes.data_movement import chain_as_pad
from repvgg_onnx.passes.pass_result import Refusal, Skipped, attempt
from repvgg_onnx.passes.readers import read_node
from repvgg_onnx.passes.rewrite import node_specs


def test_a_pass_reports_the_same_type_with_the_reports_fields_in_order():
    assert Skipped is Refusal
    refusal = Refusal.because("it pads with a non-zero value", "conv")
    assert (refusal.rule, refusal.node) == ("", "conv")
    reported = refusal.prefixed("Conv3x3+BN cannot be one node: ").by("affine_region")
    assert dataclasses.asdict(reported) == {
        "rule": "affine_region",
        "node": "conv",
        "reason": "Conv3x3+BN cannot be one node: it pads with a non-zero value",
    }
    assert list(dataclasses.asdict(reported)) == ["rule", "node", "reason"]
    assert reported.by("fold_forward", "add").node == "add"


def test_a_reader_refusal_names_its_node():
    x = gs.Variable("x", np.float32, [1, 3, 4, 4])
    weights = [gs.Constant(f"p{i}", np.ones(3, np.float32)) for i in range(4)]
    node = gs.Node(
        "BatchNormalization", "bn", {"training_mode": 1}, [x, *weights], [gs.Variable("y")]
    )
    reading = read_node(node)
    assert reading == Refusal("", "bn", "BatchNormalization 'bn' runs in training mode")


def test_planning_helpers_return_a_refusal_not_a_string():
    source = gs.Variable("x", np.float32, None)
    refusal = chain_as_pad([], source, 17)
    assert isinstance(refusal, Refusal) and "is not static" in refusal.reason
    specs = node_specs(channel_affine(np.arange(1.0, 4.0), 0.0), np.float32, False, None)
    assert specs == Refusal.because("the rank of its input is unknown")
    huge = node_specs(channel_affine(np.full(3, 1e39), 0.0), np.float32, False, 4)
    assert huge == Refusal.because("the fused weights overflow float32")


def test_the_algebra_errors_become_refusals_in_one_place():
    assert attempt(lambda: 3) == 3

    def refuse(error: Exception):
        def question():
            raise error

        return question

    sentence = "a ConvTranspose only absorbs per-channel maps after it"
    assert attempt(refuse(NotComposableError(sentence))) == Refusal("", "", sentence)
    assert attempt(refuse(IncompatibleBranchesError("groups differ"))).reason == "groups differ"
    with pytest.raises(ValueError, match="3 values for 4 channels"):
        attempt(refuse(ValueError("3 values for 4 channels")))
    sizes = attempt(refuse(ValueError("3 values for 4 channels")), errors=(ValueError,))
    assert sizes.reason == "3 values for 4 channels"
