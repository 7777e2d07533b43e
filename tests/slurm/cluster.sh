#!/usr/bin/env bash
# A private single-node Slurm (munged, slurmctld, slurmd) for the job-array test
# (tests/slurm_array.rs). Needs root and Debian's slurmctld, slurmd, slurm-client and munge.
#
#   tests/slurm/cluster.sh start DIR [CTLD_PORT SLURMD_PORT]   # prints nothing on success
#   tests/slurm/cluster.sh stop DIR                            # stops the daemons by pid
#
# Everything lives under DIR: munge's key, socket, seed, log and pid; slurm.conf and Slurm's
# state, spool, logs and pid files. Clients then need SLURM_CONF=DIR/slurm.conf. No system
# service is touched; the daemons listen on loopback ports (default 6817 and 6818).
set -euo pipefail

usage() { echo "usage: $0 start DIR [CTLD_PORT SLURMD_PORT] | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$(realpath -m "$2")

stop() {
  # Cancel this cluster's jobs while the controller still answers (a job's processes outlive
  # slurmd), then stop slurmd, the controller and munge, each by its pid file.
  if [ -s "$dir/slurmctld.pid" ] && [ -f "$dir/slurm.conf" ]; then
    export SLURM_CONF="$dir/slurm.conf"
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [ -n "${jobs// /}" ]; then
      # shellcheck disable=SC2086
      timeout 10 scancel --full $jobs 2>/dev/null || true
      for _ in $(seq 50); do [ -z "$(timeout 5 squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
    fi
  fi
  for name in slurmd slurmctld munge/munged; do
    pidfile="$dir/$name.pid"
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

fail() { echo "slurm test cluster: $*" >&2; for f in "$dir"/*.log "$dir"/munge/*.log; do [ -f "$f" ] && tail -5 "$f" >&2; done; stop; exit 1; }

start() {
  local ctld_port=${1:-6817} slurmd_port=${2:-6818}
  [ "$(id -u)" = 0 ] || { echo "slurm test cluster: needs root (the daemons run as root and munge)" >&2; exit 1; }
  for b in munged mungekey slurmctld slurmd sbatch sinfo; do
    command -v "$b" >/dev/null || { echo "slurm test cluster: $b not found; apt-get install slurmctld slurmd slurm-client munge" >&2; exit 1; }
  done
  id munge >/dev/null 2>&1 || { echo "slurm test cluster: no munge user; apt-get install munge" >&2; exit 1; }
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "slurm test cluster: $pidfile names a running process; run $0 stop $dir first" >&2
      exit 1
    fi
  done
  # A fresh controller and node each time: no jobs or node states from an earlier cluster.
  rm -rf "$dir/state" "$dir/spool"
  mkdir -p "$dir"/{state,spool,munge}
  chmod 755 "$dir"
  chown munge: "$dir/munge"
  chmod 755 "$dir/munge"   # the socket needs x for all; the key itself is 0600
  # munge refuses to run as root: a private key, socket and log, owned by the munge user.
  [ -f "$dir/munge/munge.key" ] || runuser -u munge -- mungekey --create --keyfile="$dir/munge/munge.key"
  runuser -u munge -- munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" \
    || fail "munged did not start"
  munge -n -S "$dir/munge/munge.socket" | unmunge -S "$dir/munge/munge.socket" >/dev/null || fail "munge does not round-trip"
  cpus=$(nproc)
  cat > "$dir/slurm.conf" <<CONF
ClusterName=copratest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
  slurmd -f "$SLURM_CONF" -N localhost || fail "slurmd did not start"
  for _ in $(seq 100); do
    state=$(sinfo -h -N -o %t 2>/dev/null || true)
    case "$state" in idle*|mix*|alloc*) return 0 ;; esac
    sleep 0.2
  done
  fail "node not idle after 20 s (sinfo: ${state:-no answer})"
}

case "$cmd" in
  start) shift 2; start "$@" ;;
  stop) stop ;;
  *) usage ;;
esac
