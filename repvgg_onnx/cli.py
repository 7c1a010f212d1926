"""The ``repvgg-onnx`` command line: a thin shell around the API.

Exit codes: 0 success, 1 a check failed (the models differ), 2 unusable input, 3 internal
error (a bug: rerun with --debug and report it), 130 interrupted.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from repvgg_onnx import __version__, api, io
from repvgg_onnx.errors import ReparamError
from repvgg_onnx.verify import (
    DEFAULT_ATOL_SCALE,
    DEFAULT_RTOL,
    HALF_PRECISION_ATOL_SCALE,
    HALF_PRECISION_RTOL,
    parse_input_shapes,
)

EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130


def _debug_option(command: Callable) -> Callable:
    """Add ``--debug`` and turn errors into one line on stderr and an exit code."""

    @click.option("--debug", is_flag=True, help="Show a traceback on errors.")
    @functools.wraps(command)
    def wrapper(*args, debug: bool, **kwargs):
        try:
            return command(*args, **kwargs)
        except ReparamError as error:
            if debug:
                raise
            _fail(f"error: {error}", error.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; nothing was written.", EXIT_INTERRUPTED)
        except Exception as error:
            if debug:
                raise
            _fail(
                f"internal error: {type(error).__name__}: {_one_line(error)}; "
                "rerun with --debug and report it.",
                EXIT_INTERNAL_ERROR,
            )

    return wrapper


def _fail(message: str, code: int) -> None:
    click.echo(message, err=True)
    sys.exit(code)


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="repvgg-onnx")
def main() -> None:
    """Re-parameterize training-time multi-branch CNNs (RepVGG and friends) on ONNX graphs."""


@main.command()
@click.argument("input_path", metavar="IN.onnx", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUT.onnx", type=click.Path(path_type=Path))
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check the fused model against the original in onnxruntime before writing it.",
)
@click.option(
    "--atol",
    type=float,
    default=None,
    help=f"Absolute tolerance. Default: {DEFAULT_ATOL_SCALE:g} × the largest |value| of each "
    f"original output ({HALF_PRECISION_ATOL_SCALE:g} × for float16).",
)
@click.option(
    "--rtol",
    type=float,
    default=None,
    help=f"Relative tolerance. Default: {DEFAULT_RTOL:g} ({HALF_PRECISION_RTOL:g} for float16).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    metavar="NAME:DIMS",
    help="Shape for an input with dynamic dims, e.g. input:1x3x224x224 (repeatable). "
    "A dynamic first dim defaults to 1.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="How the report is printed on stdout.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing on success.")
@_debug_option
def fuse(
    input_path: Path,
    output_path: Path,
    verify: bool,
    atol: float | None,
    rtol: float | None,
    seed: int,
    input_shapes: tuple[str, ...],
    output_format: str,
    quiet: bool,
) -> None:
    """Fuse every re-parameterizable block of IN.onnx and write the deploy form to OUT.onnx.

    Each block of parallel linear branches (3x3 conv+BN, 1x1 conv+BN, identity BN, …) summed
    by Add becomes one Conv; BatchNormalization after a Conv folds into it. Unless
    --no-verify, both models run in onnxruntime on the same random inputs and OUT.onnx is
    written only if every output agrees. IN.onnx is never modified; OUT.onnx is written
    atomically (it may be IN.onnx itself).
    """
    try:
        result = api.fuse(
            input_path,
            verify=verify,
            input_shapes=parse_input_shapes(input_shapes),
            seed=seed,
            atol=atol,
            rtol=rtol,
        )
    except api.FuseVerificationError as error:
        _print_report(error.report, output_format, quiet=False)
        raise
    start = time.perf_counter()
    io.save_model(result.model, output_path)
    result.report.seconds["save"] = time.perf_counter() - start
    _print_report(result.report, output_format, quiet)
    if output_format == "text" and not quiet:
        click.echo(f"Wrote {output_path}")


def _print_report(report, output_format: str, quiet: bool) -> None:
    if quiet:
        return
    click.echo(report.to_json() if output_format == "json" else report.to_text())
