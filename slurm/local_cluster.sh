#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine (slurmctld + slurmd + munge), for kfr's tests
# and for trying kfr's SLURM launcher without a cluster. Needs Debian's packages and root:
#   apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
#
#   slurm/local_cluster.sh start    # writes $KFR_SLURM_DIR/slurm.conf, starts the daemons
#   eval "$(slurm/local_cluster.sh env)"   # SLURM_CONF (and a sacct stand-in) for this shell
#   slurm/local_cluster.sh status
#   slurm/local_cluster.sh stop     # stops the daemons this script started; keeps the logs
#
# Everything (config, state, spool, logs, pid files) lives in KFR_SLURM_DIR (default
# /tmp/kfr-slurm); nothing under /etc is changed. The node is described by `slurmd -C` (this
# machine's real CPUs and memory). Jobs run as root, which SLURM allows with SlurmUser=root.
# ProctrackType=proctrack/linuxproc and TaskPlugin=task/none need no cgroups, so this works in
# containers too.
set -euo pipefail

BASE="${KFR_SLURM_DIR:-/tmp/kfr-slurm}"
CONF="$BASE/slurm.conf"
MUNGE_SOCKET="$BASE/munge/munge.socket"
PARTITION="${KFR_SLURM_PARTITION:-local}"

die() { echo "local_cluster.sh: $*" >&2; exit 1; }

need_binaries() {
  local missing=()
  for bin in slurmctld slurmd sbatch sinfo munged mungekey; do
    command -v "$bin" >/dev/null 2>&1 || [[ -x "/usr/sbin/$bin" ]] || missing+=("$bin")
  done
  if ((${#missing[@]})); then
    die "missing ${missing[*]}: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
  fi
  [[ $(id -u) -eq 0 ]] || die "run as root (the daemons and SlurmUser=root)"
}

write_conf() {
  local host node
  host="$(hostname -s)"
  # "NodeName=<host> CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=..
  # RealMemory=..": this machine as slurmd sees it, so the node never drains for a mismatch.
  node="$(/usr/sbin/slurmd -C | head -n 1)"
  mkdir -p "$BASE/state" "$BASE/spool" "$BASE/log" "$BASE/munge"
  cat >"$CONF" <<EOF
# Written by kfr's slurm/local_cluster.sh: a single-node cluster on $host.
ClusterName=kfrlocal
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldPort=${KFR_SLURMCTLD_PORT:-6817}
SlurmdPort=${KFR_SLURMD_PORT:-6818}
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Ended jobs stay visible to scontrol (and the sacct stand-in below) for 5 minutes.
MinJobAge=300
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

write_sacct() {
  # No accounting database here, so the real sacct answers "accounting storage is disabled".
  # submitit polls `sacct -o JobID,State,NodeList --parsable2 -j IDS` to see a job that died
  # without a result; this stand-in answers that query from scontrol. `env` puts it on PATH.
  mkdir -p "$BASE/bin"
  cat >"$BASE/bin/sacct" <<'EOF'
#!/usr/bin/env bash
# sacct stand-in for kfr's local SLURM cluster (slurm/local_cluster.sh): states from scontrol.
ids=""
while (($#)); do
  case "$1" in
    -j|--jobs) ids="$2"; shift 2 ;;
    -j*) ids="${1#-j}"; shift ;;
    --jobs=*) ids="${1#--jobs=}"; shift ;;
    *) shift ;;
  esac
done
echo "JobID|State|NodeList"
for id in ${ids//,/ }; do
  scontrol show job -o "$id" 2>/dev/null | while read -r line; do
    declare -A f=()
    for word in $line; do [[ "$word" == *=* ]] && f["${word%%=*}"]="${word#*=}"; done
    job="${f[JobId]}"
    if [[ -n "${f[ArrayJobId]:-}" ]]; then
      task="${f[ArrayTaskId]}"
      [[ "$task" == *[-,]* ]] && task="[${task%%%*}]"
      job="${f[ArrayJobId]}_${task}"
    fi
    echo "${job}|${f[JobState]}|${f[NodeList]:-None assigned}"
  done
done
EOF
  chmod +x "$BASE/bin/sacct"
}

is_running() {  # pid file -> running?
  [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

start() {
  need_binaries
  if is_running "$BASE/slurmctld.pid"; then
    echo "already running (SLURM_CONF=$CONF)"
    return 0
  fi
  write_conf
  write_sacct
  # munged refuses to run as root unless forced; its own socket and pid file live in BASE.
  # Its own key in BASE: nothing depends on /etc/munge (single host: any key will do).
  if ! is_running "$BASE/munge/munged.pid"; then
    [[ -f "$BASE/munge/munge.key" ]] || /usr/sbin/mungekey --create --keyfile="$BASE/munge/munge.key"
    chmod 700 "$BASE/munge"
    /usr/sbin/munged --force --socket="$MUNGE_SOCKET" --key-file="$BASE/munge/munge.key" \
      --pid-file="$BASE/munge/munged.pid" --log-file="$BASE/log/munged.log" \
      --seed-file="$BASE/munge/munged.seed"
  fi
  export SLURM_CONF="$CONF"
  # -i: ignore state left by an earlier run of this script (jobs, node state).
  /usr/sbin/slurmctld -i -f "$CONF"
  /usr/sbin/slurmd -f "$CONF"
  local host
  host="$(hostname -s)"
  for _ in $(seq 1 60); do
    local state
    state="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
    if [[ "$state" == idle* || "$state" == mix* || "$state" == alloc* ]]; then
      echo "SLURM up: partition '$PARTITION' on $host ($state). SLURM_CONF=$CONF"
      return 0
    fi
    if [[ "$state" == drain* || "$state" == down* ]]; then
      scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    fi
    sleep 1
  done
  echo "SLURM did not come up; logs in $BASE/log:" >&2
  tail -n 20 "$BASE/log/slurmctld.log" "$BASE/log/slurmd.log" >&2 || true
  exit 1
}

stop_daemon() {  # name pid-file
  local pid_file="$2"
  if is_running "$pid_file"; then
    local pid
    pid="$(cat "$pid_file")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    echo "stopped $1 ($pid)"
  fi
  rm -f "$pid_file"
}

stop() {
  if [[ -f "$CONF" ]] && is_running "$BASE/slurmctld.pid"; then
    # Cancel what is still queued or running, so no job outlives the cluster.
    SLURM_CONF="$CONF" scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
  fi
  stop_daemon slurmd "$BASE/slurmd.pid"
  stop_daemon slurmctld "$BASE/slurmctld.pid"
  stop_daemon munged "$BASE/munge/munged.pid"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$CONF PATH=$BASE/bin:\$PATH" ;;
  status)
    if is_running "$BASE/slurmctld.pid"; then
      SLURM_CONF="$CONF" sinfo
    else
      echo "not running"
      exit 3
    fi
    ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 64 ;;
esac
