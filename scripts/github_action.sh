#!/usr/bin/env bash
# The steps of the repvgg-onnx GitHub Action (action.yml), as one script a test can run.
#
# Inputs (environment): INPUT_MODEL (required: model paths, folders or quoted patterns,
# separated by spaces or newlines), INPUT_REFERENCE (golden outputs .npz, or a model .onnx
# that must compute the same function), INPUT_FUSE (write the fused deploy form of the one
# model there), INPUT_FAIL_IF_FUSABLE (default true). REPVGG_ONNX_INSTALLED=true skips the
# install of the action's checkout ($GITHUB_ACTION_PATH) into a venv.
#
# Writes the Markdown report (verdict line first) to $GITHUB_STEP_SUMMARY and to
# report.md in the work folder, the outputs verdict, fused-blocks and report-path to
# $GITHUB_OUTPUT, annotations (::error / ::notice) on stdout; exits 1 unless the verdict
# is passed.
set -uo pipefail
: "${INPUT_MODEL:?the action needs the model input}"
: "${GITHUB_STEP_SUMMARY:?not running as a GitHub Actions step}"
: "${GITHUB_OUTPUT:?not running as a GitHub Actions step}"
reference=${INPUT_REFERENCE:-}
fuse_to=${INPUT_FUSE:-}
gate=${INPUT_FAIL_IF_FUSABLE:-true}
work=$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/repvgg-onnx.XXXXXX")

worst=0      # the worst exit code so far: 0 ok, 1 a check failed, 2 unusable input, 3 bug
sections=()  # the Markdown reports, in the order they ran
record() {   # record CODE: keep the worst exit code
  if [ "$1" -gt "$worst" ]; then worst=$1; fi
}
stop() {     # stop MESSAGE: an unusable input, reported like a command's own error
  echo "::error title=repvgg-onnx::$1"
  printf '### repvgg-onnx: ❌ error (exit 2)\n\n%s\n' "$1" > "$work/usage.md"
  sections+=("$work/usage.md")
  record 2
}

if [ "${REPVGG_ONNX_INSTALLED:-false}" != true ]; then
  python3 -m venv "$work/venv" \
    && "$work/venv/bin/python" -m pip install --quiet "${GITHUB_ACTION_PATH:?}" \
    || { echo "::error title=repvgg-onnx::could not install repvgg-onnx"; exit 2; }
  PATH="$work/venv/bin:$PATH"
fi

set -f  # the patterns are for repvgg-onnx inspect to expand, not for this shell
read -r -d '' -a models <<< "$INPUT_MODEL"
set +f
checked=("${models[@]}")  # what ships: the models, or the fused one
ready=true                # false once a step failed that the next ones read
fused_blocks=0

# 1. Fuse (optional): the deploy form is written only if onnxruntime finds it equal.
if [ -n "$fuse_to" ] && [ "${#models[@]}" -ne 1 ]; then
  stop "fuse takes one model; the model input names ${#models[@]}."
  ready=false
elif [ -n "$fuse_to" ]; then
  mkdir -p "$(dirname "$fuse_to")"
  repvgg-onnx fuse "${models[0]}" "$fuse_to" --force --format json --report "$work/fuse.md" \
    > "$work/fuse.json"
  code=$?
  record "$code"
  sections+=("$work/fuse.md")
  if [ "$code" -ne 0 ]; then
    ready=false
  else
    fused_blocks=$(python3 -c 'import json, sys; print(len(json.load(sys.stdin)["fused"]))' \
      < "$work/fuse.json")
    checked=("$fuse_to")
    repvgg-onnx diff "${models[0]}" "$fuse_to" --report "$work/diff.md" --quiet
    record $?
    sections+=("$work/diff.md")
  fi
fi

# 2. The reference (optional): golden outputs, or a model computing the same function.
if [ "$ready" = true ] && [ -n "$reference" ]; then
  if [ "${#checked[@]}" -ne 1 ]; then
    stop "reference checks one model; the model input names ${#checked[@]}."
  else
    case "$reference" in
      *.npz) repvgg-onnx verify "${checked[0]}" --reference-outputs "$reference" \
               --report "$work/verify.md" --quiet ;;
      *) repvgg-onnx verify "$reference" "${checked[0]}" --batches 4 \
           --report "$work/verify.md" --quiet ;;
    esac
    record $?
    sections+=("$work/verify.md")
  fi
fi

# 3. The gate: one annotation per model on stdout, the Markdown report to the summary.
if [ "$ready" = true ]; then
  if [ "$gate" = true ]; then
    repvgg-onnx inspect "${checked[@]}" --fail-if-fusable --format github \
      --report "$work/inspect.md"
  else
    repvgg-onnx inspect "${checked[@]}" --quiet --report "$work/inspect.md"
  fi
  record $?
  sections+=("$work/inspect.md")
fi

case "$worst" in
  0) verdict=passed headline="✅ passed" ;;
  1) verdict=failed headline="❌ failed" ;;
  *) verdict=error headline="❌ error (exit $worst)" ;;
esac
report="$work/report.md"
{
  echo "## repvgg-onnx: $headline"
  for section in "${sections[@]}"; do
    echo
    cat "$section"
  done
} > "$report"
cat "$report" >> "$GITHUB_STEP_SUMMARY"
{
  echo "verdict=$verdict"
  echo "fused-blocks=$fused_blocks"
  echo "report-path=$report"
} >> "$GITHUB_OUTPUT"
[ "$verdict" = passed ]
