"""docs/ci.md's shell steps, exactly as written, on the committed sample."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import onnx

from repvgg_onnx.reports.render.schema import report_schema

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "models" / "samples" / "repvgg_a0_half.onnx"


def recipe() -> str:
    text = (ROOT / "docs" / "ci.md").read_text()
    match = re.search(r"<!-- recipe: deploy-model.sh -->\n```bash\n(.*?)```", text, re.DOTALL)
    assert match, "docs/ci.md lost its recipe block"
    return match.group(1)


def run_recipe(tmp_path: Path, trained: Path, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "deploy-model.sh"
    script.write_text(recipe())
    return subprocess.run(
        ["bash", str(script)],
        cwd=tmp_path,
        env={**os.environ, "TRAINED": str(trained), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_recipe_ships_a_verified_deploy_model_with_all_reports(tmp_path):
    inputs = tmp_path / "sample_inputs.npz"
    np.savez(inputs, input=np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype("f4"))
    done = run_recipe(tmp_path, SAMPLE, SAMPLE_INPUTS=str(inputs), OUT="dist")
    assert done.returncode == 0, done.stderr
    dist = tmp_path / "dist"
    counts = {n.op_type for n in onnx.load(dist / "model.onnx").graph.node}
    assert "BatchNormalization" not in counts and "Add" not in counts
    for name in ("fuse.json", "inspect.json"):
        jsonschema.validate(json.loads((dist / name).read_text()), report_schema())
    assert json.loads((dist / "inspect.json").read_text())["fusable"] == []
    assert "same function" in (dist / "verify.md").read_text()
    assert "Conv3x3+BN, Conv1x1+BN, BN → Conv3x3" in (dist / "diff.md").read_text()
    comment = (dist / "comment.md").read_text()
    assert "✅ verified" in comment and "Conv3x3+BN, Conv1x1+BN, BN → Conv3x3" in comment
    assert len(comment) < 65_536
    assert (dist / "diff.html").read_text().lstrip().lower().startswith("<!doctype html")


def test_recipe_fails_when_the_gate_finds_a_training_model(tmp_path, monkeypatch):
    """A deploy step that shipped the training form (here: fuse replaced by a copy) fails."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    real = subprocess.run(["which", "repvgg-onnx"], capture_output=True, text=True, check=True)
    wrapper = fake_bin / "repvgg-onnx"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = fuse ]; then cp "$2" "$3"; exit 0; fi\n'
        f'exec {real.stdout.strip()} "$@"\n'
    )
    wrapper.chmod(0o755)
    done = run_recipe(tmp_path, SAMPLE, PATH=f"{fake_bin}:{os.environ['PATH']}")
    assert done.returncode == 1
    assert "fusable blocks remain" in done.stderr
