"""The pre-commit hook (``.pre-commit-hooks.yaml``), installed by pre-commit itself from this
checkout into a repository holding a training-form and a deploy-form model.

``pre-commit try-repo`` builds the hook's environment afresh on every call (its store is a
temporary folder, whatever ``PRE_COMMIT_HOME`` says): about 30–45 s with a warm pip cache,
most of it pip asking the package index. So it runs once, on both models; the deploy model
alone is then checked with the hook's own ``entry`` line, read from the same file.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from helpers import ci_doc_block
from repvgg_onnx.cli import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "models" / "samples"
HOOK_ID = "repvgg-onnx-deploy-form"

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None, reason="git is not installed: pre-commit needs it"
)


def hook() -> dict:
    (found,) = [h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text()) if h]
    return found


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """A git repository with the committed sample in training form and in deploy form."""
    repo = tmp_path_factory.mktemp("user-repo")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    shutil.copy(SAMPLES / "repvgg_a0_half.onnx", repo / "training.onnx")
    shutil.copy(SAMPLES / "repvgg_a0_half.deploy.onnx", repo / "deploy.onnx")
    (repo / "README.md").write_text("not a model: the hook's files pattern leaves it out\n")
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    return repo


def test_the_hook_is_declared_for_onnx_files():
    declared = hook()
    assert declared["id"] == HOOK_ID and declared["files"] == r"\.onnx$"
    assert declared["language"] == "python" and declared["require_serial"] is True
    assert declared["entry"].startswith("repvgg-onnx inspect --fail-if-fusable")


def test_pre_commit_try_repo_refuses_the_training_form_only(repository, tmp_path):
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "PRE_COMMIT_COLOR": "never",
    }
    files = ["training.onnx", "deploy.onnx", "README.md"]
    done = subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), HOOK_ID, "--files", *files],
        cwd=repository,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(
        line.startswith("ONNX models are in deploy form (repvgg-onnx)") and line.endswith("Failed")
        for line in lines
    ), done.stdout
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [
        "error: training.onnx: 22 fusable blocks remain; run repvgg-onnx fuse training.onnx "
        "training.deploy.onnx before shipping."
    ]
    documented = ci_doc_block("pre-commit")  # what docs/ci.md says the hook printed
    assert documented in done.stdout


def test_the_hooks_entry_passes_the_deploy_form(repository, monkeypatch):
    """The hook's own command line, as pre-commit runs it, on each model alone."""
    program, *args = shlex.split(hook()["entry"])
    assert program == "repvgg-onnx"
    monkeypatch.chdir(repository)
    passing = CliRunner().invoke(main, [*args, "deploy.onnx"])
    assert (passing.exit_code, passing.stdout, passing.stderr) == (0, "", "")
    failing = CliRunner().invoke(main, [*args, "training.onnx"])
    assert failing.exit_code == 1 and failing.stdout == ""
    assert "run repvgg-onnx fuse training.onnx" in failing.stderr


def test_the_documented_config_is_valid_and_names_this_hook(tmp_path):
    """docs/ci.md's ``.pre-commit-config.yaml``, read by pre-commit's own config loader."""
    from pre_commit.clientlib import load_config

    config = tmp_path / ".pre-commit-config.yaml"
    config.write_text(ci_doc_block("pre-commit-config.yaml"))
    (repo,) = load_config(str(config))["repos"]
    assert [h["id"] for h in repo["hooks"]] == [HOOK_ID]
    assert repo["repo"].endswith("/repvgg-onnx") and repo["rev"]


def test_the_readme_shows_the_documented_config():
    readme = (ROOT / "README.md").read_text()
    assert f"```yaml\n{ci_doc_block('pre-commit-config.yaml')}```" in readme
