#!/usr/bin/env bash
# Upload the offline W&B runs of kfr cells (logger=wandb, the default, writes them under each
# cell's folder: <cell>/wandb/offline-run-*). Compute nodes often have no internet: run this on
# a login node (or anywhere the output folder is mounted) after `wandb login`.
#
#   slurm/sync_wandb.sh outputs/                  # every run not uploaded yet
#   slurm/sync_wandb.sh outputs/demo/sweep -p my-project -e my-team
#   slurm/sync_wandb.sh --dry-run outputs/        # list what would be uploaded
#
# Runs already uploaded (wandb leaves a run-<id>.wandb.synced file) are skipped, so running it
# again after more cells finish uploads only the new ones. Options after the folders (-p, -e,
# ...) go to `wandb sync` unchanged.
set -euo pipefail

dry_run=0
dirs=()
extra=()
while (($#)); do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    -*) extra=("$@"); break ;;
    *) dirs+=("$1"); shift ;;
  esac
done
((${#dirs[@]})) || { echo "usage: $0 [--dry-run] DIR... [wandb sync options]" >&2; exit 64; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wandb_cmd="${WANDB_CMD:-}"
if [[ -z "$wandb_cmd" ]]; then
  if [[ -x "$here/../.venv/bin/wandb" ]]; then wandb_cmd="$here/../.venv/bin/wandb"; else wandb_cmd="wandb"; fi
fi

pending=()
while IFS= read -r -d '' run; do
  compgen -G "$run/run-*.wandb.synced" >/dev/null && continue
  compgen -G "$run/run-*.wandb" >/dev/null || continue
  pending+=("$run")
done < <(find "${dirs[@]}" -type d -name 'offline-run-*' -prune -print0 | sort -z)

if ((${#pending[@]} == 0)); then
  echo "No offline W&B runs left to upload under ${dirs[*]}"
  exit 0
fi
echo "${#pending[@]} offline run(s) to upload"
if ((dry_run)); then
  printf '  %s\n' "${pending[@]}"
  exit 0
fi
# In batches, so a long list never exceeds the command-line limit.
for ((i = 0; i < ${#pending[@]}; i += 50)); do
  "$wandb_cmd" sync "${extra[@]}" "${pending[@]:i:50}"
done
