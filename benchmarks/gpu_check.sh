#!/usr/bin/env bash
# The GPU check of kfr on an offline GPU machine: every kind of cell once, timed, one summary.
#
#   benchmarks/gpu_check.sh --bundle DIR [--out DIR] [--dry-run] [--only a,b] [--budget S]
#                           [--jobs N] [--python PY] [--keep-work]
#
# --bundle DIR  what `make gpu-bundle` wrote (.gpu-bundle/, carried to the machine): wheels of
#               what the image lacks, SmolLM2's tokenizer, the encoder's template.
# --out DIR     where gpu_check.json, gpu_check.md and gpu_check.log go (rewritten after every
#               step); default benchmarks/results/gpu_check-<date>-<time>/.
# --dry-run     the same plan on the CPU with tiny settings (model.device=cpu,
#               trainer.accelerator=cpu, tiny_llama's 2 layers, 24 questions, 1 epoch).
# --only a,b    run only these steps (python3 benchmarks/gpu_check.py run --help lists them).
# --budget S    seconds for all steps (450 on the GPU; each step also has its own time box).
# --jobs N      steps at a time (3 on the GPU, 1 with --dry-run); prepare runs first and
#               pytest -m gpu last, each alone, and the DDP and FSDP cells never together.
# --python PY   the Python that runs everything: python3 (the GPU image's, with CUDA torch);
#               for --dry-run .venv/bin/python when there is one.
#
# 1. The bundle's wheels go into a fresh folder with pip (`--no-index --no-deps --target`), put
#    first on PYTHONPATH with the repository root; nothing is installed into the Python itself.
# 2. benchmarks/gpu_check.py runs the steps (prepare, the cells, pytest -m gpu), --jobs at a time.
# Exit code: 0 every step passed or was skipped for a stated reason, 1 one failed (or the
# bundle did not install), 2 no GPU (without --dry-run).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

BUNDLE="" OUT="" DRY=0 PY="" FORWARD=()
usage() { sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE="${2:?--bundle needs a folder}"; shift ;;
    --out) OUT="${2:?--out needs a folder}"; shift ;;
    --python) PY="${2:?--python needs a path}"; shift ;;
    --dry-run) DRY=1; FORWARD+=(--dry-run) ;;
    --keep-work) FORWARD+=(--keep-work) ;;
    --only|--budget|--jobs) FORWARD+=("$1" "${2:?$1 needs a value}"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown option $1 (--help lists them)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$BUNDLE" ] || [ ! -d "$BUNDLE/wheels" ]; then
  echo "gpu_check: --bundle DIR is required: the folder \`make gpu-bundle\` writes (.gpu-bundle)" >&2
  exit 2
fi
BUNDLE="$(cd "$BUNDLE" && pwd)"
if [ -z "$PY" ]; then
  PY=python3
  if [ "$DRY" = 1 ] && [ -x .venv/bin/python ]; then PY="$ROOT/.venv/bin/python"; fi
fi
OUT="${OUT:-benchmarks/results/gpu_check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"

# ---------------------------------------------------------------- 1. the bundle's wheels
SITE="$(mktemp -d "${TMPDIR:-/tmp}/kfr-site.XXXXXX")"
LOG="$SITE.install.log"
trap 'rm -rf "$SITE" "$LOG"' EXIT
START=$SECONDS
"$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
  --target "$SITE" "$BUNDLE"/wheels/*.whl >"$LOG" 2>&1
rc=$?
STATUS=passed NOTE="$(ls "$BUNDLE"/wheels | sed 's/-py3.*//; s/-cp3.*//' | paste -sd, -) into $SITE"
if [ "$rc" != 0 ]; then
  STATUS=failed NOTE="pip exit code $rc: $(tail -n 1 "$LOG" | cut -c1-300)"
fi
echo "gpu_check: bundle install $STATUS in $((SECONDS - START)) s ($PY)"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled

# ---------------------------------------------------------------- 2. the steps
"$PY" benchmarks/gpu_check.py run --bundle "$BUNDLE" --out "$OUT" --python "$PY" \
  --install-status "$STATUS" --install-note "$NOTE" --install-seconds "$((SECONDS - START))" \
  --install-log "$LOG" ${FORWARD[@]+"${FORWARD[@]}"}
