"""The GitHub Action (``action.yml``): its one step runs ``scripts/github_action.sh``, which
runs here as the runner would, with the job summary, the step outputs and the action's path
pointing at temporary files and this checkout (the tool is already installed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx
import yaml

from helpers import assert_same_function, ci_doc_block

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "github_action.sh"
SAMPLE = ROOT / "models" / "samples" / "repvgg_a0_half.onnx"
SAMPLE_DEPLOY = ROOT / "models" / "samples" / "repvgg_a0_half.deploy.onnx"
TINY = ROOT / "models" / "fixtures" / "tiny_block"


#: The environment with this interpreter's ``repvgg-onnx`` first on PATH (installed already).
TOOL_ON_PATH = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
}


def action() -> dict:
    return yaml.safe_load((ROOT / "action.yml").read_text())


@dataclass(frozen=True)
class StepRun:
    """What a run of the action's step left: exit code, log, summary and outputs."""

    code: int
    stdout: str
    stderr: str
    summary: str
    outputs: dict[str, str]


def run_action(workspace: Path, **inputs: str) -> StepRun:
    """The action's step in ``workspace`` with ``inputs`` (``fail_if_fusable`` for
    ``fail-if-fusable``), as the composite step passes them: ``INPUT_*`` variables."""
    summary, outputs = workspace / "step_summary.md", workspace / "github_output"
    summary.write_text("")
    outputs.write_text("")
    env = {
        **TOOL_ON_PATH,
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_ACTION_PATH": str(ROOT),
        "RUNNER_TEMP": str(workspace),
        "REPVGG_ONNX_INSTALLED": "true",
        **{f"INPUT_{name.upper()}": value for name, value in inputs.items()},
    }
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    pairs = [line.split("=", 1) for line in outputs.read_text().splitlines()]
    return StepRun(done.returncode, done.stdout, done.stderr, summary.read_text(), dict(pairs))


def test_the_action_passes_every_input_to_the_script_and_reads_every_output():
    declared = action()
    (step,) = declared["runs"]["steps"]
    assert declared["runs"]["using"] == "composite"
    assert step["run"] == 'bash "${{ github.action_path }}/scripts/github_action.sh"'
    script = SCRIPT.read_text()
    for name in declared["inputs"]:
        variable = "INPUT_" + name.upper().replace("-", "_")
        assert step["env"][variable] == f"${{{{ inputs.{name} }}}}"
        assert variable in script, f"the script never reads {variable}"
    for name, output in declared["outputs"].items():
        assert output["value"] == f"${{{{ steps.run.outputs.{name} }}}}"
        assert re.search(rf'echo "{name}=', script), f"the script never sets {name}"
    assert declared["inputs"]["fail-if-fusable"]["default"] == "true"
    assert [n for n, i in declared["inputs"].items() if i.get("required")] == ["model"]


def test_a_training_form_model_fails_the_step_with_an_annotation(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "model.onnx")
    step = run_action(tmp_path, model="model.onnx")
    assert step.code == 1, step.stderr
    assert step.outputs["verdict"] == "failed" and step.outputs["fused-blocks"] == "0"
    assert step.stdout.splitlines() == [
        "::error file=model.onnx,title=repvgg-onnx%3A training-form model::22 fusable blocks "
        "remain; run repvgg-onnx fuse model.onnx model.deploy.onnx before shipping."
    ]
    assert step.stdout == ci_doc_block("action")  # what docs/ci.md says it printed
    lines = step.summary.splitlines()
    assert lines[0] == "## repvgg-onnx: ❌ failed"
    assert lines[2] == (
        "### repvgg-onnx inspect `model.onnx`: ❌ 22 fusable blocks (training form)"
    )
    assert Path(step.outputs["report-path"]).read_text() == step.summary


def documented_action_step() -> dict:
    """The step of docs/ci.md's workflow that uses this action."""
    workflow = yaml.safe_load(ci_doc_block("workflow.yml"))
    (step,) = [
        step
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if step.get("uses", "").startswith("your-org/repvgg-onnx@")
    ]
    return step


def test_the_documented_workflow_fuses_checks_the_golden_outputs_and_passes(tmp_path):
    """docs/ci.md's workflow, its action inputs as written, on the sample: the fused model is
    written and computes what the sample computes, every check passes, the outputs are set."""
    inputs = documented_action_step()["with"]
    assert set(inputs) <= set(action()["inputs"])
    (tmp_path / inputs["model"]).parent.mkdir(parents=True)
    shutil.copy(SAMPLE, tmp_path / inputs["model"])  # what the exporter step would write
    (tmp_path / inputs["reference"]).parent.mkdir(parents=True)
    golden = ["--save-outputs", inputs["reference"], "--quiet"]
    record = subprocess.run(  # the golden outputs, recorded once (docs/ci.md says how)
        ["repvgg-onnx", "verify", SAMPLE, SAMPLE_DEPLOY, *golden],
        cwd=tmp_path,
        env=TOOL_ON_PATH,
        capture_output=True,
        text=True,
        check=False,
    )
    assert record.returncode == 0, record.stderr
    step = run_action(tmp_path, **inputs)
    assert step.code == 0, step.stderr
    assert step.outputs["verdict"] == "passed" and step.outputs["fused-blocks"] == "22"
    fused = onnx.load(tmp_path / inputs["fuse"])
    assert_same_function(onnx.load(SAMPLE), fused)
    assert {node.op_type for node in fused.graph.node}.isdisjoint({"BatchNormalization", "Add"})
    assert step.stdout.splitlines() == [
        f"::notice file={inputs['fuse']},title=repvgg-onnx::deploy form: nothing left to fuse."
    ]
    headings = [line for line in step.summary.splitlines() if line.startswith("#")]
    assert headings == [
        "## repvgg-onnx: ✅ passed",
        "### repvgg-onnx fuse: 22 blocks fused",
        f"### repvgg-onnx diff: `{inputs['model']}` → `{inputs['fuse']}`",
        "### repvgg-onnx verify: ✅ same function",
        f"### repvgg-onnx inspect `{inputs['fuse']}`: ✅ no fusable block, no "
        "BatchNormalization (deploy form)",
    ]
    assert f"`{inputs['reference']}`" in step.summary  # the verify report names the golden file
    assert Path(step.outputs["report-path"]).read_text() == step.summary


def test_without_the_gate_several_models_are_reported_and_pass(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(TINY, models)
    step = run_action(
        tmp_path, model="models/ts17.onnx\nmodels/reference.onnx", fail_if_fusable="false"
    )
    assert step.code == 0, step.stderr
    assert step.stdout == ""  # no gate, no annotation
    assert step.outputs["verdict"] == "passed"
    assert step.summary.splitlines()[2] == (
        "### repvgg-onnx inspect: ❌ 2 models: 1 in training form (models/ts17.onnx), "
        "1 in deploy form"
    )


def test_an_unusable_input_is_an_error_verdict(tmp_path):
    step = run_action(tmp_path, model="missing.onnx", fuse="out.onnx")
    assert step.code == 1
    assert step.outputs["verdict"] == "error"
    assert step.summary.splitlines()[:3] == [
        "## repvgg-onnx: ❌ error (exit 2)",
        "",
        "### repvgg-onnx fuse: ❌ error (exit 2)",
    ]
    assert "missing.onnx: file not found" in step.summary
    assert not (tmp_path / "out.onnx").exists()


def test_the_readme_uses_the_action_as_docs_ci_does():
    """README's short step has the inputs of docs/ci.md's workflow, which the tests run."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
    (step,) = [yaml.safe_load(b)[0] for b in blocks if "uses: your-org/repvgg-onnx@" in b]
    documented = documented_action_step()
    assert (step["uses"], step["with"]) == (documented["uses"], documented["with"])
