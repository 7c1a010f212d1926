"""The ``repvgg-onnx`` command line: a thin shell around the API.

Exit codes (every command): 0 success, 1 a check failed (the models differ, verification
failed, a fusable block remains under ``--fail-if-fusable``), 2 unusable input, 3 internal
error (a bug: rerun with --debug and report it), 130 interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

import click
from click.core import ParameterSource

from repvgg_onnx import api, io
from repvgg_onnx.errors import InputSpecError, ReparamError
from repvgg_onnx.reports.inspection import Inspection, Inspections, Unusable
from repvgg_onnx.reports.render.formats import Rendered, render
from repvgg_onnx.reports.render.gate import gate_failure, gate_fix
from repvgg_onnx.reports.render.schema import error_report
from repvgg_onnx.verification.compare import (
    DEFAULT_ATOL_SCALE,
    DEFAULT_RTOL,
    HALF_PRECISION_ATOL_SCALE,
    HALF_PRECISION_RTOL,
)
from repvgg_onnx.verification.inputs import parse_input_shapes
from repvgg_onnx.version import __version__

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130

REPORT_FORMATS = {".json": "json", ".md": "markdown", ".html": "html", ".txt": "text"}


def _command(kind: str) -> Callable:
    """Add ``--debug`` and ``--quiet``; turn errors into one line on stderr, an exit code and,
    with ``--report``, an error report (so a CI job always has a report to show)."""

    def decorate(command: Callable) -> Callable:
        @click.option("--quiet", "-q", is_flag=True, help="Print nothing on stdout.")
        @click.option("--debug", is_flag=True, help="Show a traceback on errors.")
        @functools.wraps(command)
        def wrapper(*args, debug: bool, quiet: bool, **kwargs):
            report_path = kwargs.get("report_path")
            try:
                return command(*args, quiet=quiet, **kwargs)
            except ReparamError as error:
                if debug:
                    raise
                reported = getattr(error, "report", None) is not None  # its report is out
                message = f"error: {_error_line(error)}"
                _fail(kind, message, error.exit_code, None if reported else report_path)
            except KeyboardInterrupt:
                _fail(kind, "interrupted; nothing was written.", EXIT_INTERRUPTED, report_path)
            except Exception as error:
                if debug:
                    raise
                message = (
                    f"internal error: {type(error).__name__}: {_one_line(error)}; "
                    "rerun with --debug and report it."
                )
                _fail(kind, message, EXIT_INTERNAL_ERROR, report_path)

        return wrapper

    return decorate


def _error_line(error: ReparamError) -> str:
    """The error's sentence and, when it has one, what to use instead."""
    return f"{error}" + (f" Use {error.hint}." if error.hint else "")


def _fail(kind: str, message: str, code: int, report_path: Path | None = None) -> None:
    """One line on stderr, the error report at ``--report`` (if it can be written), exit."""
    message = _escape_control_characters(message)
    click.echo(message, err=True)
    if report_path is not None and report_path.suffix.lower() in REPORT_FORMATS:
        report = error_report(kind, message, code)
        text = render(report, REPORT_FORMATS[report_path.suffix.lower()])
        with contextlib.suppress(Exception):  # the error already said what went wrong
            io.save_text(text.rstrip("\n") + "\n", report_path)
    sys.exit(code)


def _escape_control_characters(text: str) -> str:
    """``text`` with each control character written as its Python escape (``\\n``, ``\\x1b``):
    names from a model may hold newlines or terminal escapes, and an error stays one line."""
    return "".join(
        repr(char)[1:-1] if unicodedata.category(char) == "Cc" else char for char in text
    )


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def _progress(message: str, quiet: bool) -> None:
    """A status line on stderr, rewritten in place, only for a person watching a terminal;
    :func:`_progress_done` clears it."""
    if not quiet and sys.stderr.isatty():
        click.echo(f"\r\033[K… {message}", err=True, nl=False)


def _progress_done(quiet: bool) -> None:
    if not quiet and sys.stderr.isatty():
        click.echo("\r\033[K", err=True, nl=False)


class _OneLineErrors(click.Group):
    """Usage errors (an unknown option, a bad value) as one line on stderr, exit 2."""

    def main(self, *args, **kwargs):
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.Abort:
            _fail("repvgg-onnx", "interrupted; nothing was written.", EXIT_INTERRUPTED)
        except click.exceptions.NoArgsIsHelpError as error:
            click.echo(error.format_message(), err=True)
            sys.exit(2)
        except click.ClickException as error:
            command = error.ctx.command_path if getattr(error, "ctx", None) else "repvgg-onnx"
            _fail("usage", f"error: {error.format_message()} (see {command} --help)", 2)


def _format_option(*choices: str) -> Callable:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(choices),
        default="text",
        show_default=True,
        help="How the report is printed on stdout.",
    )


def _report_option(command: Callable) -> Callable:
    return click.option(
        "--report",
        "report_path",
        type=click.Path(path_type=Path),
        default=None,
        help="Also write the report to this file, in the format its extension names "
        "(.json, .md, .html, .txt).",
    )(command)


def _check_report_path(path: Path | None) -> None:
    """Refuse an unusable ``--report`` before any work is done."""
    if path is None:
        return
    if path.suffix.lower() not in REPORT_FORMATS:
        raise InputSpecError(
            f"--report {path}: unknown extension '{path.suffix}'; use one of "
            f"{', '.join(REPORT_FORMATS)}."
        )
    io.check_output_path(path)


def _emit(result: Rendered, output_format: str, report_path: Path | None, quiet: bool) -> None:
    """Print the report on stdout and write it to ``report_path``."""
    report = result.to_dict()
    if report_path is not None:
        text = render(report, REPORT_FORMATS[report_path.suffix.lower()])
        io.save_text(text.rstrip("\n") + "\n", report_path)
    if not quiet:
        click.echo(render(report, output_format).rstrip("\n"))


def _tolerances(per_output: bool = False) -> Callable[[Callable], Callable]:
    """``--atol``, ``--rtol``, ``--seed``, ``--input-shape``; with ``per_output``, ``--atol``
    and ``--rtol`` repeat and take ``NAME:VALUE`` for one output beside a plain ``VALUE``."""
    each = " Repeatable: NAME:VALUE sets it for one output." if per_output else ""
    kind = (
        {"multiple": True, "type": str, "metavar": "[NAME:]VALUE"}
        if per_output
        else {"type": float, "default": None}
    )
    options = [
        click.option(
            "--atol",
            help=f"Absolute tolerance. Default: {DEFAULT_ATOL_SCALE:g} × the largest |value| of "
            f"each reference output ({HALF_PRECISION_ATOL_SCALE:g} × for float16).{each}",
            **kind,
        ),
        click.option(
            "--rtol",
            help=f"Relative tolerance. Default: {DEFAULT_RTOL:g} "
            f"({HALF_PRECISION_RTOL:g} for float16).{each}",
            **kind,
        ),
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Seed of the random inputs."
        ),
        click.option(
            "--input-shape",
            "input_shapes",
            multiple=True,
            metavar="NAME:DIMS",
            help="Shape for an input with dynamic dims, e.g. input:1x3x224x224 (repeatable). "
            "A dynamic first dim defaults to 1.",
        ),
    ]

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _per_output(flag: str, specs: tuple[str, ...]) -> tuple[float | None, dict[str, float]]:
    """``VALUE`` (for every output; at most once) and ``NAME:VALUE`` specs, parsed. A name may
    itself hold ``:``; the value follows the last one."""
    everywhere: list[float] = []
    by_name: dict[str, float] = {}
    for spec in specs:
        name, _, text = spec.rpartition(":")
        try:
            value = float(text)
        except ValueError:
            raise InputSpecError(
                f"{flag} takes VALUE or NAME:VALUE (e.g. {flag} logits:1e-3), not '{spec}'."
            ) from None
        if not value >= 0:
            raise InputSpecError(f"{flag} must be a number >= 0, not {text}.")
        if not name:
            everywhere.append(value)
        elif by_name.setdefault(name, value) != value:
            raise InputSpecError(f"{flag} gives output '{name}' two values; give one.")
    if len(everywhere) > 1:
        raise InputSpecError(f"{flag} VALUE is given {len(everywhere)} times; give it once.")
    return (everywhere[0] if everywhere else None), by_name


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="repvgg-onnx")
def main() -> None:
    """Re-parameterize training-time multi-branch CNNs (RepVGG and friends) on ONNX graphs.

    \b
    Exit codes: 0 ok · 1 check failed (models differ, fusable block left)
                2 unusable input · 3 internal error · 130 interrupted
    """


@main.command(short_help="Fuse every training-time block of IN.onnx into OUT.onnx.")
@click.argument("input_path", metavar="IN.onnx", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUT.onnx", type=click.Path(path_type=Path))
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check the fused model against the original in onnxruntime before writing it.",
)
@click.option(
    "--force",
    "-f",
    is_flag=True,
    help="Replace OUT.onnx if it exists (writing over IN.onnx itself needs no --force).",
)
@click.option(
    "--external-data",
    is_flag=True,
    help="Write the weights to a data file next to OUT.onnx even under 2 GB (by default only "
    "a model too large for one protobuf gets one).",
)
@_tolerances()
@_format_option("text", "markdown", "json")
@_report_option
@_command("fuse")
def fuse(
    input_path: Path,
    output_path: Path,
    verify: bool,
    force: bool,
    external_data: bool,
    atol: float | None,
    rtol: float | None,
    seed: int,
    input_shapes: tuple[str, ...],
    output_format: str,
    report_path: Path | None,
    quiet: bool,
) -> None:
    """Fuse every re-parameterizable block of IN.onnx and write the deploy form to OUT.onnx.

    Each block of parallel linear branches (3x3 conv+BN, 1x1 conv+BN, identity BN, …) summed
    by Add becomes one Conv; BatchNormalization after a Conv folds into it. Unless
    --no-verify, both models run in onnxruntime on the same random inputs and OUT.onnx is
    written only if every output agrees. IN.onnx is never modified; OUT.onnx is written
    atomically (it may be IN.onnx itself).
    """
    shapes = parse_input_shapes(input_shapes)
    _check_report_path(report_path)
    io.check_output_path(output_path)
    _refuse_to_replace(input_path, output_path, force)
    _check_tolerances(atol, rtol)
    try:
        result = api.fuse(
            input_path,
            output_path,
            external_data=True if external_data else None,
            verify=verify,
            input_shapes=shapes,
            seed=seed,
            atol=atol,
            rtol=rtol,
            progress=lambda phase: _progress(f"{input_path}: {phase}", quiet),
        )
    except api.FuseVerificationError as error:
        _progress_done(quiet)
        _emit(error.report, output_format, report_path, quiet)
        raise
    _progress_done(quiet)
    _emit(result.report, output_format, report_path, quiet)
    if not result.report.fused:
        click.echo(
            f"warning: {input_path} has no training-time block: nothing was fused, and "
            f"{output_path} computes the same graph.",
            err=True,
        )
    if output_format == "text" and not quiet:
        click.echo(f"Wrote {output_path}")


def _check_tolerances(atol: float | None, rtol: float | None) -> None:
    for name, value in (("--atol", atol), ("--rtol", rtol)):
        if value is not None and not value >= 0:
            raise InputSpecError(f"{name} must be a number >= 0, not {value}.")


def _refuse_to_replace(input_path: Path, output_path: Path, force: bool) -> None:
    """An existing OUT.onnx is replaced only with --force, or when it is IN.onnx itself:
    swapped arguments must not overwrite a training model."""
    if force or not output_path.exists() or not input_path.exists():
        return  # a missing IN.onnx is reported as such when it is loaded
    if os.path.samefile(input_path, output_path):
        return
    raise InputSpecError(
        f"{output_path} already exists; pass --force to replace it (did you swap IN and OUT?)."
    )


@main.command("verify", short_help="Check that B.onnx computes what A.onnx computes.")
@click.argument("a_path", metavar="A.onnx", type=click.Path(path_type=Path))
@click.argument("b_path", metavar="[B.onnx]", type=click.Path(path_type=Path), required=False)
@_tolerances(per_output=True)
@click.option(
    "--batches",
    type=int,
    default=None,
    help="Random batches to compare on (default 1; not with --inputs).",
)
@click.option(
    "--inputs",
    "inputs_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Your own inputs: an .npz file with one array per model input, by input name (an "
    ".npy file for a model with one input).",
)
@click.option(
    "--localize",
    is_flag=True,
    help="When the models differ, name the first shared intermediate tensor that diverges.",
)
@click.option(
    "--save-outputs",
    "save_path",
    type=click.Path(path_type=Path),
    default=None,
    metavar="PATH.npz",
    help="Also write A's inputs and outputs to PATH.npz (atomically), to check a model "
    "against later with --reference-outputs.",
)
@click.option(
    "--reference-outputs",
    "reference_path",
    type=click.Path(path_type=Path),
    default=None,
    metavar="PATH.npz",
    help="Check the one model given against the outputs saved in PATH.npz by --save-outputs, "
    "on the inputs saved with them (no model A).",
)
@_format_option("text", "markdown", "json")
@_report_option
@_command("verify")
def verify_command(
    a_path: Path,
    b_path: Path | None,
    atol: tuple[str, ...],
    rtol: tuple[str, ...],
    seed: int,
    input_shapes: tuple[str, ...],
    batches: int,
    inputs_path: Path | None,
    localize: bool,
    save_path: Path | None,
    reference_path: Path | None,
    output_format: str,
    report_path: Path | None,
    quiet: bool,
) -> None:
    """Check that B.onnx computes the same function as A.onnx (exit 1 if not).

    Both run in onnxruntime on the same inputs; every output is compared by name (by position,
    with a warning, when the names differ). Passes iff |B − A| ≤ atol + rtol·|A| everywhere.
    With --reference-outputs PATH.npz, give only B.onnx: it runs on the inputs saved there
    and is compared with the outputs saved there.
    """
    shapes = parse_input_shapes(input_shapes)
    _check_report_path(report_path)
    global_atol, output_atol = _per_output("--atol", atol)
    global_rtol, output_rtol = _per_output("--rtol", rtol)
    if inputs_path is not None and batches is not None:
        raise InputSpecError(
            "--inputs and --batches both say what to run on; give one of them (your inputs "
            "are one batch)."
        )
    if inputs_path is not None and input_shapes:
        raise InputSpecError("--inputs fixes the shapes itself; drop --input-shape.")
    if reference_path is not None:
        _check_reference_usage(b_path, save_path, batches, inputs_path, input_shapes, localize)
        _progress(f"running {a_path} on the inputs in {reference_path}", quiet)
        models = (a_path,)
    else:
        if b_path is None:
            raise InputSpecError(
                "verify needs two models, A.onnx and B.onnx (or B.onnx and "
                "--reference-outputs PATH.npz)."
            )
        _progress(f"running {a_path} and {b_path}", quiet)
        models = (a_path, b_path)
    result = api.verify(
        *models,
        input_shapes=shapes,
        seed=seed,
        batches=batches or 1,
        inputs=inputs_path,
        atol=global_atol,
        rtol=global_rtol,
        output_atol=output_atol,
        output_rtol=output_rtol,
        localize=localize,
        save_outputs=save_path,
        reference_outputs=reference_path,
        progress=lambda message: _progress(f"verifying, {message}", quiet),
    )
    _progress_done(quiet)
    if quiet or output_format != "text":  # the text report lists them itself
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)
    _emit(result, output_format, report_path, quiet)
    if not result.passed:
        sys.exit(EXIT_CHECK_FAILED)


def _given(parameter: str) -> bool:
    """Whether the user gave this option (its value may equal the default)."""
    return click.get_current_context().get_parameter_source(parameter) != ParameterSource.DEFAULT


def _check_reference_usage(
    b_path: Path | None,
    save_path: Path | None,
    batches: int | None,
    inputs_path: Path | None,
    input_shapes: tuple[str, ...],
    localize: bool,
) -> None:
    """With --reference-outputs, the saved run is model A and its inputs: one model only,
    and no option that would choose inputs, save A's run or look inside A."""
    if b_path is not None:
        raise InputSpecError(
            "--reference-outputs takes the place of A.onnx: give only the model to check."
        )
    given = [
        flag
        for flag, value in [
            ("--save-outputs", save_path is not None),
            ("--batches", batches is not None),
            ("--inputs", inputs_path is not None),
            ("--input-shape", bool(input_shapes)),
            ("--localize", localize),
            ("--seed", _given("seed")),
        ]
        if value
    ]
    if given:
        raise InputSpecError(
            f"--reference-outputs replays the saved inputs and has no model A; drop "
            f"{', '.join(given)}."
        )


@main.command("diff", short_help="Show what changed from A.onnx to B.onnx, block by block.")
@click.argument("a_path", metavar="A.onnx", type=click.Path(path_type=Path))
@click.argument("b_path", metavar="B.onnx", type=click.Path(path_type=Path))
@_format_option("text", "markdown", "json", "html")
@_report_option
@_command("diff")
def diff_command(
    a_path: Path, b_path: Path, output_format: str, report_path: Path | None, quiet: bool
) -> None:
    """Show what changed from A.onnx to B.onnx, block by block.

    Op counts, parameters and size, interface (inputs, outputs, opsets, metadata), nodes and
    initializers added and removed, and each fused block: which subgraph of A became which
    node of B. Exit 0 whatever the differences (use verify to check equivalence).
    """
    _check_report_path(report_path)
    _progress(f"comparing {a_path} and {b_path}", quiet)
    result = api.diff(a_path, b_path)
    _progress_done(quiet)
    _emit(result, output_format, report_path, quiet)


@main.command("inspect", short_help="Summarize models and list what fuse would do.")
@click.argument(
    "model_args", metavar="MODEL.onnx...", nargs=-1, required=True, type=click.Path(path_type=Path)
)
@click.option(
    "--fail-if-fusable",
    is_flag=True,
    help="Exit 1 if fuse would change a model, or a control-flow body holds a "
    "BatchNormalization or linear branches: a training-form model must not ship.",
)
@_format_option("text", "markdown", "json", "github")
@_report_option
@_command("inspect")
def inspect_command(
    model_args: tuple[Path, ...],
    fail_if_fusable: bool,
    output_format: str,
    report_path: Path | None,
    quiet: bool,
) -> None:
    """Summarize each MODEL.onnx and list what fuse would do to it, writing nothing.

    Inputs and outputs, opsets, op counts, parameters and size; each fusable block with its
    branches, and each candidate fuse would leave alone with the reason. A folder stands for
    its .onnx files (recursively, sorted), a quoted pattern (\"models/*.onnx\") for its
    matches. Several models: every one is reported, then one line per model and a summary
    line; the exit code is the worst (2 for an unusable model beats 1 for a fusable one).
    """
    _check_report_path(report_path)
    if len(model_args) == 1 and not _names_many(model_args[0]):
        _inspect_one(model_args[0], fail_if_fusable, output_format, report_path, quiet)
        return
    models = []
    for path in _model_paths(model_args):
        _progress(f"inspecting {path}", quiet)
        models.append(_inspect_or_unusable(path))
    _progress_done(quiet)
    inspections = Inspections(tuple(models))
    _emit(inspections, output_format, report_path, quiet)
    sys.exit(_report_many(inspections.to_dict(), fail_if_fusable))


def _inspect_one(
    model_path: Path,
    fail_if_fusable: bool,
    output_format: str,
    report_path: Path | None,
    quiet: bool,
) -> None:
    """``inspect`` of one file: its report, and the gate's error line and exit 1."""
    _progress(f"inspecting {model_path}", quiet)
    inspection = api.inspect(model_path)
    _progress_done(quiet)
    _emit(inspection, output_format, report_path, quiet)
    if not fail_if_fusable:
        return
    report = {**inspection.to_dict(), "path": str(model_path)}
    reason = gate_failure(report)
    if reason is None:
        return
    click.echo(f"error: {reason}; {gate_fix(report)}.", err=True)
    sys.exit(EXIT_CHECK_FAILED)


_PATTERN_CHARACTERS = frozenset("*?[")


def _names_many(argument: Path) -> bool:
    """A folder, or a pattern the shell left unexpanded (no such file, holds ``*?[``)."""
    return argument.is_dir() or (
        not argument.exists() and bool(_PATTERN_CHARACTERS & set(str(argument)))
    )


def _model_paths(arguments: tuple[Path, ...]) -> list[Path]:
    """The models the arguments name, in order, each once: a folder's ``*.onnx`` files
    (recursively, sorted), a pattern's matches (sorted; ``**`` crosses folders; a folder it
    matches stands for its models), a file itself. A folder or pattern that names no model
    stays, to be reported unusable."""
    found: list[Path] = []
    for argument in arguments:
        named = [argument]
        if _names_many(argument) and not argument.is_dir():
            named = sorted(Path(p) for p in glob.glob(str(argument), recursive=True))
        matches = [model for path in named for model in _models_in(path)]
        found += matches or [argument]
    return list(dict.fromkeys(found))


def _models_in(path: Path) -> list[Path]:
    """A folder's ``*.onnx`` files, recursively and sorted; anything else, itself."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*.onnx") if p.is_file())
    return [path]


def _inspect_or_unusable(path: Path) -> Inspection | Unusable:
    """``path`` inspected, or, when it cannot be (missing, corrupt, a folder or pattern with
    no model), the one line that says why and its exit code."""
    try:
        if _names_many(path):
            kind = "folder" if path.is_dir() else "pattern"
            raise InputSpecError(f"{path}: this {kind} names no .onnx file.")
        return api.inspect(path)
    except ReparamError as error:
        return Unusable(str(path), _escape_control_characters(_error_line(error)), error.exit_code)


def _report_many(report: dict, fail_if_fusable: bool) -> int:
    """One error line on stderr per unusable model and, with ``fail_if_fusable``, per model
    the gate refuses (with its fix); the worst exit code: 2 unusable, 1 refused, 0."""
    codes = [EXIT_OK]
    for model in report["models"]:
        if "error" in model:
            click.echo(f"error: {model['error']['message']}", err=True)
            codes.append(model["error"]["exit_code"])
        elif fail_if_fusable and (failure := gate_failure(model)) is not None:
            message = f"{model['path']}: {failure}; {gate_fix(model)}."
            click.echo(f"error: {_escape_control_characters(message)}", err=True)
            codes.append(EXIT_CHECK_FAILED)
    return max(codes)
