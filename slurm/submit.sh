#!/usr/bin/env bash
# Submit a kfr sweep to SLURM without waiting for it. Hydra's submitit launcher waits until every
# job of the sweep has ended, so the sweep's driver (`kfr -m ...`) itself runs as a small
# 1-CPU job; it submits the cells as a job array, waits, then writes the report.
#
#   slurm/submit.sh experiment=paper_mmlu hydra/launcher=slurm_gpu trainer=ddp
#   slurm/submit.sh experiment=demo hydra/launcher=slurm_cpu        # prints the driver job id
#
# Every argument goes to `kfr -m` unchanged. Without a hydra/launcher=... argument the cells run
# inside the driver job itself (one after another): name a SLURM profile (conf/hydra/launcher/).
# Resubmitting the same command resumes the sweep: finished cells are skipped.
#
# Environment (all optional):
#   KFR_DRIVER_PARTITION  partition of the driver job (default: the cluster's default)
#   KFR_DRIVER_TIME       its time limit (default 3-00:00:00: it must outlive the whole sweep)
#   KFR_DRIVER_MEM        its memory (default 4G)
#   KFR_DRIVER_ACCOUNT    account to charge
#   KFR_LOG_DIR           where the driver's log goes (default: slurm-logs/)
#   KFR                   the kfr command (default: the kfr next to this repository's .venv,
#                         else `kfr` on PATH)
#   KFR_SUBMIT_DRY_RUN=1  print the job script instead of submitting it
set -euo pipefail

if (($# == 0)); then
  echo "usage: $0 KFR_OVERRIDES... (e.g. experiment=demo hydra/launcher=slurm_cpu)" >&2
  exit 64
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
kfr="${KFR:-}"
if [[ -z "$kfr" ]]; then
  if [[ -x "$repo/.venv/bin/kfr" ]]; then kfr="$repo/.venv/bin/kfr"; else kfr="$(command -v kfr || true)"; fi
fi
[[ -n "$kfr" ]] || { echo "submit.sh: no kfr command: set KFR=/path/to/kfr" >&2; exit 1; }

log_dir="$(realpath -m "${KFR_LOG_DIR:-slurm-logs}")"
args="$(printf '%q ' "$@")"
workdir="$(pwd)"

script="$(cat <<EOF
#!/usr/bin/env bash
#SBATCH --job-name=kfr-sweep
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=${KFR_DRIVER_MEM:-4G}
#SBATCH --time=${KFR_DRIVER_TIME:-3-00:00:00}
#SBATCH --output=${log_dir}/kfr-sweep-%j.out
${KFR_DRIVER_PARTITION:+#SBATCH --partition=${KFR_DRIVER_PARTITION}}
${KFR_DRIVER_ACCOUNT:+#SBATCH --account=${KFR_DRIVER_ACCOUNT}}
set -euo pipefail
cd $(printf '%q' "$workdir")
# The cells are separate jobs with their own resources: do not let this job's SLURM_* settings
# (CPUs, memory, task counts) leak into them through the environment (SLURM_CONF is a location,
# not a job setting, and stays).
for name in \$(compgen -e | grep -E '^(SLURM_|SBATCH_|SRUN_)' | grep -v '^SLURM_CONF\$'); do
  unset "\$name"
done
exec $(printf '%q' "$kfr") -m $args
EOF
)"

if [[ "${KFR_SUBMIT_DRY_RUN:-0}" == 1 ]]; then
  echo "$script"
  exit 0
fi
mkdir -p "$log_dir"
job_id="$(echo "$script" | sbatch --parsable)"
echo "Submitted the sweep driver as job ${job_id%%;*}: log ${log_dir}/kfr-sweep-${job_id%%;*}.out"
echo "Follow it with: squeue -j ${job_id%%;*}; tail -f ${log_dir}/kfr-sweep-${job_id%%;*}.out"
