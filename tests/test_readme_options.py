"""The option tables of docs/cli.md list exactly the options each command has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from repvgg_onnx.cli import main

CLI_DOC = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()


def documented_options(command: str) -> set[str]:
    match = re.search(rf"<!-- options: {command} -->\n(.*?)\n\n", CLI_DOC, re.DOTALL)
    assert match, f"docs/cli.md has no option table for {command}"
    first_cells = [row.split(" | ")[0] for row in match.group(1).splitlines()[2:]]
    return {flag for cell in first_cells for flag in re.findall(r"--?[a-z][a-z-]*", cell)}


def command_options(command: str) -> set[str]:
    params = main.commands[command].params
    return {
        flag
        for param in params
        for flag in [*param.opts, *param.secondary_opts]
        if flag.startswith("-") and flag not in ("-h", "--help")
    }


@pytest.mark.parametrize("command", ["fuse", "verify", "diff", "inspect"])
def test_cli_doc_lists_every_option_and_no_other(command):
    assert documented_options(command) == command_options(command)
