"""The Python API: the same power as the CLI, usable without touching files.

``fuse`` never modifies the ``onnx.ModelProto`` it is given; it returns a new one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import onnx

from repvgg_onnx import io
from repvgg_onnx.errors import CheckFailedError, InputSpecError, ModelRunError, first_line
from repvgg_onnx.graph.memory_release import trim_free_heap, worth_returning
from repvgg_onnx.io.stripped_model import model_skeleton
from repvgg_onnx.pipeline.function_inlining import inline_for_passes
from repvgg_onnx.pipeline.fuse_model import fuse_graph
from repvgg_onnx.pipeline.pass_fixpoint import DEFAULT_PASSES, Pass
from repvgg_onnx.reports.diff import GraphDiff, diff_models
from repvgg_onnx.reports.fuse_report import FuseReport, ModelStats
from repvgg_onnx.reports.inspection import Inspection, inspect_model
from repvgg_onnx.verification import golden
from repvgg_onnx.verification.compare import (
    Tolerances,
    verify_against_run,
    verify_models,
    verify_runs,
)
from repvgg_onnx.verification.inputs import load_feeds
from repvgg_onnx.verification.isolation import isolated
from repvgg_onnx.verification.localize import first_divergence
from repvgg_onnx.verification.results import Verification

ModelLike = onnx.ModelProto | str | os.PathLike


@dataclass
class FuseResult:
    """The deploy-form model, what was done to it, and the verification verdict."""

    model: onnx.ModelProto
    report: FuseReport

    @property
    def verification(self) -> Verification | None:
        return self.report.verification

    def save(self, path: str | os.PathLike, external_data: bool | None = None) -> None:
        """Write the fused model atomically, with its weights in a data file next to it when
        ``external_data`` is true, or when it is ``None`` and the model exceeds 2 GB (see
        :func:`repvgg_onnx.io.save.save_model`)."""
        io.save_model(self.model, path, external_data=external_data)


def load(model: ModelLike, map_external_data: bool = False) -> onnx.ModelProto:
    """A ModelProto as is, or the model at a path (with its external data, or with its large
    weights left in their data file: see :func:`repvgg_onnx.io.load.load_model`)."""
    if isinstance(model, onnx.ModelProto):
        return model
    return io.load_model(model, map_external_data=map_external_data)


def _path_of(model: ModelLike) -> str | None:
    return None if isinstance(model, onnx.ModelProto) else os.fspath(model)


def _label_of(model: ModelLike) -> str:
    """How an error names ``model``: its path, if it has one."""
    return _path_of(model) or "the model"


def verify(
    a: ModelLike,
    b: ModelLike | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    batches: int = 1,
    inputs: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    output_atol: Mapping[str, float] | None = None,
    output_rtol: Mapping[str, float] | None = None,
    localize: bool = False,
    save_outputs: str | os.PathLike | None = None,
    reference_outputs: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> Verification:
    """Do ``a`` and ``b`` compute the same function? Runs both in onnxruntime on the same
    inputs (``inputs``: an ``.npz`` path or arrays by input name; else ``batches`` seeded
    random batches) and compares every output. With ``localize``, a failure also names the
    first shared intermediate tensor that diverges. Neither model is modified.

    ``output_atol``/``output_rtol`` override ``atol``/``rtol`` for the outputs they name (of
    the reference). ``save_outputs``: also write ``a``'s run (its inputs and outputs) to that
    ``.npz`` (see :mod:`repvgg_onnx.verification.golden`).
    ``verify(b, reference_outputs=path)``: hold the one model ``b`` to the outputs saved in
    ``path``, on the inputs saved with them.
    """
    tolerances = Tolerances(atol, rtol, dict(output_atol or {}), dict(output_rtol or {}))
    if reference_outputs is not None:
        if b is not None:
            raise InputSpecError(
                "reference outputs replace model A: give only the model to check (B)."
            )
        if save_outputs is not None or localize or inputs is not None or input_shapes:
            raise InputSpecError(
                "with reference outputs, the inputs are the saved ones and there is no model A "
                "to save, localize in or shape: drop those options."
            )
        return _verify_against_outputs(a, reference_outputs, tolerances, progress)
    if b is None:
        raise InputSpecError("verify needs two models, A and B, or reference outputs for B.")
    if save_outputs is not None:
        io.check_output_path(save_outputs)
    model_a, model_b = load(a, map_external_data=True), load(b, map_external_data=True)
    feeds = load_feeds(inputs, model_a) if isinstance(inputs, str | os.PathLike) else inputs
    result = isolated(
        _verified_and_saved,
        model_a,
        model_b,
        save_outputs,
        _path_of(a),
        input_shapes=input_shapes,
        seed=seed,
        tolerances=tolerances,
        batches=batches,
        feeds=feeds,
        roles=("A", "B"),
        progress=progress,
    )
    localization = None
    if localize and not result.passed and result.feeds is not None:
        localization = isolated(first_divergence, model_a, model_b, result.feeds, atol, rtol)
    return replace(result, localization=localization, a_path=_path_of(a), b_path=_path_of(b))


def _verified_and_saved(
    model_a: onnx.ModelProto,
    model_b: onnx.ModelProto,
    save_path: str | os.PathLike | None,
    a_path: str | None,
    **options,
) -> Verification:
    """:func:`verify_runs`, and A's run written to ``save_path`` when one is given (here, in
    the process that ran A, so its outputs never cross a pipe)."""
    verification, reference_run = verify_runs(model_a, model_b, **options)
    if save_path is not None:
        golden.save_outputs(reference_run, save_path, model_path=a_path, seed=options["seed"])
    return verification


def _verify_against_outputs(
    model: ModelLike,
    path: str | os.PathLike,
    tolerances: Tolerances,
    progress: Callable[[str], None] | None,
) -> Verification:
    """``model`` run on the inputs saved in ``path`` and compared with the outputs saved."""
    saved = golden.load_outputs(path)
    candidate = load(model, map_external_data=True)
    result = isolated(
        verify_against_run,
        candidate,
        saved.run,
        seed=saved.seed,
        tolerances=tolerances,
        progress=progress,
    )
    return replace(
        result, a_path=saved.model_path, b_path=_path_of(model), reference_outputs=os.fspath(path)
    )


def diff(a: ModelLike, b: ModelLike) -> GraphDiff:
    """What changed from ``a`` to ``b``: interface, op counts, nodes, weights, fused blocks."""
    return diff_models(load(a), load(b), _path_of(a), _path_of(b))


def inspect(model: ModelLike) -> Inspection:
    """The model's summary and what ``fuse`` would do to it, without writing anything."""
    loaded = load(model)
    with io.text_errors((loaded, _label_of(model))):
        return inspect_model(loaded, _path_of(model))


def fuse(
    model: ModelLike,
    output: str | os.PathLike | None = None,
    *,
    external_data: bool | None = None,
    verify: bool = True,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    passes: Sequence[Pass] = DEFAULT_PASSES,
    progress: Callable[[str], None] | None = None,
) -> FuseResult:
    """Re-parameterize every fusable block of ``model`` and check the result in onnxruntime.

    The returned model computes the same function as ``model`` (verified on seeded random
    inputs unless ``verify=False``); graph inputs, outputs, opsets, IR version, producer and
    metadata are kept. A failed verification raises :class:`CheckFailedError`. ``progress``
    hears each phase (loading, each round of passes, each verification batch). Local functions
    whose calls hold a block to fuse (or a skipped candidate, or a BN) are inlined first (the
    report says which); the others stay functions.

    With ``output``, the fused model is also written there atomically (``external_data`` as in
    :meth:`FuseResult.save`), and what is verified is the file about to be published: its
    bytes are written and synced, the verification runs on them (weights read from the data
    file just written, never a second copy), and only then does the file replace ``output``;
    a failed verification leaves ``output`` as it was. The result's model is then the model
    as written (large weights read from its data file).
    """
    tell = progress or (lambda message: None)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    tell("loading")
    original = load(model, map_external_data=True)  # read where needed, never all at once
    seconds["load"] = time.perf_counter() - start

    start = time.perf_counter()
    if original.functions:
        tell("choosing the local functions to inline")
    with io.text_errors((original, _label_of(model))):
        prepared, inlining = inline_for_passes(original, passes)
        fused_model, outcome = fuse_graph(prepared, passes, tell)
        check_fused_model(fused_model, original)
    seconds["fuse"] = time.perf_counter() - start

    report = FuseReport(
        fused=outcome.fused,
        skipped=outcome.skipped,
        before=ModelStats.of(original),
        after=ModelStats.of(fused_model),
        rounds=outcome.rounds,
        seconds=seconds,
        canonicalized=outcome.canonicalized,
        inlining=inlining,
    )
    check = None
    if verify:
        options = {"input_shapes": input_shapes, "seed": seed, "atol": atol, "rtol": rtol}
        check = partial(_verify_fused, original, report=report, options=options, tell=tell)
    # from here on only the verification reads the original: the save must not hold its
    # weights (nor those of the copy the passes read) beside the fused model's
    del prepared, original
    if output is None:
        io.read_mapped_data(fused_model)  # what passed through untouched: it stands alone
        if check is not None:
            check(fused_model)
        return FuseResult(fused_model, report)
    start = time.perf_counter()
    tell(f"saving {os.fspath(output)}")
    large = worth_returning(fused_model)
    # weights that passed through untouched are copied from the input's data file by the
    # save, never read into memory; the model returned reads them from the output's
    with io.StagedModel(fused_model, output, external_data=external_data) as staged:
        del fused_model  # from here on its weights are read from the files written
        if large:
            trim_free_heap()
        if check is not None:
            check(staged.model)
        staged.publish()
    seconds["save"] = time.perf_counter() - start - seconds.get("verify", 0.0)
    return FuseResult(staged.model, report)


def _verify_fused(
    original: onnx.ModelProto,
    fused: onnx.ModelProto,
    *,
    report: FuseReport,
    options: dict,
    tell: Callable[[str], None],
) -> None:
    """Run ``original`` and ``fused`` in onnxruntime and record the verdict in ``report``;
    raise :class:`FuseVerificationError` if they differ, :class:`CheckFailedError` if the
    fused model does not run."""
    start = time.perf_counter()
    try:
        report.verification = isolated(
            verify_models,
            original,
            fused,
            **options,
            progress=lambda message: tell(f"verifying, {message}"),
        )
    except ModelRunError as error:
        if error.role != "fused":
            raise
        raise CheckFailedError(
            f"the fused model does not run in onnxruntime ({error}); this is a bug in "
            "repvgg-onnx: please report it with the model."
        ) from error
    report.seconds["verify"] = time.perf_counter() - start
    if not report.verification.passed:
        raise FuseVerificationError(report)


class FuseVerificationError(CheckFailedError):
    """The fused model does not compute the same function; ``report`` says where."""

    def __init__(self, report: FuseReport) -> None:
        reason = report.verdict()["reason"]
        super().__init__(
            f"verification failed: {reason}; nothing was written. If the tolerances are right, "
            "please report this model.",
            hint="--atol/--rtol to loosen the check",
        )
        self.report = report


def check_fused_model(fused: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """``onnx.checker`` with strict shape inference on the result's skeleton (its weights are
    built from numpy arrays, valid by construction), unless the original itself fails it: we
    must not make a model worse, but need not make it better."""
    try:
        onnx.checker.check_model(model_skeleton(fused), full_check=True)
    except Exception as error:  # checker and shape inference raise several types
        try:
            onnx.checker.check_model(model_skeleton(original), full_check=True)
        except Exception:
            return
        raise CheckFailedError(
            f"the fused model fails onnx.checker ({first_line(error)}); "
            "this is a bug in repvgg-onnx: please report it with the model."
        ) from error
