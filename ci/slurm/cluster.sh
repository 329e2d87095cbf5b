#!/usr/bin/env bash
# A single-node Slurm cluster for tests and CI: root, no systemd, everything in one scratch folder.
#
#   ci/slurm/cluster.sh start  [DIR]   install slurm-wlm + munge if missing, start munged,
#                                      slurmctld and slurmd, wait until the node is idle
#   ci/slurm/cluster.sh stop   [DIR]   cancel its jobs, stop the daemons by their recorded pids
#   ci/slurm/cluster.sh status [DIR]   say which daemons run; exit 0 only if all three do
#
# DIR defaults to $PULSEHPG_SLURM_DIR, then /tmp/pulsehpg-slurm. It holds slurm.conf, the munge
# key and socket, state, spool, logs and pid files, and env.sh: `source DIR/env.sh` points the
# Slurm commands (sinfo, sbatch, squeue ...) at this cluster (SLURM_CONF). Both commands are
# idempotent: start on a running cluster only checks it, stop on a stopped one does nothing.
#
# Environment: PULSEHPG_SLURMCTLD_PORT (16817), PULSEHPG_SLURMD_PORT (16818): non-default, so a
# site Slurm on 6817/6818 is left alone; PULSEHPG_SLURM_TIMEOUT (60): seconds to wait for idle.
set -euo pipefail

usage() { echo "usage: $0 start|stop|status [DIR]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
action=$1
dir=$(realpath -m "${2:-${PULSEHPG_SLURM_DIR:-/tmp/pulsehpg-slurm}}")  # slurm.conf needs absolute paths
ctld_port=${PULSEHPG_SLURMCTLD_PORT:-16817}
slurmd_port=${PULSEHPG_SLURMD_PORT:-16818}
timeout=${PULSEHPG_SLURM_TIMEOUT:-60}

say() { echo "slurm-cluster: $*"; }
die() { echo "slurm-cluster: error: $*" >&2; exit 1; }

# daemon name -> pid file; the names are also what /proc/PID/comm must show
declare -A pidfile=([munged]=munge/munged.pid [slurmctld]=run/slurmctld.pid
                    [slurmd]=run/slurmd.pid)

pid_of() {  # the pid of a daemon started here, if it is still that daemon
    local f=$dir/${pidfile[$1]} pid
    [[ -s $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$1"* ]] || return 1
    echo "$pid"
}

running() { pid_of munged >/dev/null && pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null; }

stop_daemon() {
    local name=$1 pid i
    if ! pid=$(pid_of "$name"); then
        rm -f "$dir/${pidfile[$name]}"
        say "$name is not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        say "$name (pid $pid) did not stop within 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/${pidfile[$name]}"
    say "stopped $name (pid $pid)"
}

stop() {
    [[ -d $dir ]] || { say "nothing to stop: $dir does not exist"; return 0; }
    export SLURM_CONF=$dir/slurm.conf
    if pid_of slurmctld >/dev/null && command -v squeue >/dev/null; then
        local jobs
        jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ') || true
        if [[ -n ${jobs// /} ]]; then
            say "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
            sleep 1
        fi
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
}

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd sinfo sbatch munged mungekey; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install slurm-wlm munge"
    say "installing slurm-wlm munge (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {  # sets conf_changed=1 if slurm.conf is new or differs from the one there
    local node_line node
    # this host's name, CPUs, topology and memory, as slurmd sees them (a RealMemory larger
    # than slurmd finds would drain the node)
    node_line=$(slurmd -C | grep -m 1 '^NodeName=') || die "slurmd -C did not describe this node"
    node=${node_line%% *}
    node=${node#NodeName=}
    cat >"$dir/slurm.conf.new" <<CONF
# written by ci/slurm/cluster.sh; a one-node cluster in $dir
ClusterName=pulsehpg
SlurmctldHost=$node
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmdTimeout=60
MinJobAge=3600
$node_line State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
    if [[ -f $dir/slurm.conf ]] && cmp -s "$dir/slurm.conf" "$dir/slurm.conf.new"; then
        rm "$dir/slurm.conf.new"
        conf_changed=0
    else
        mv "$dir/slurm.conf.new" "$dir/slurm.conf"
        conf_changed=1
    fi
    echo "export SLURM_CONF=$dir/slurm.conf" >"$dir/env.sh"
}

show_logs() {
    local log
    for log in "$dir/log/slurmctld.log" "$dir/log/slurmd.log" "$dir/munge/munged.log"; do
        [[ -f $log ]] && { echo "--- last lines of $log" >&2; tail -n 15 "$log" >&2; }
    done
    return 0
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_idle() {
    local state="" deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        state=$(sinfo -h -N -o %t 2>/dev/null | head -n 1) || true
        [[ $state == idle || $state == mix || $state == alloc ]] && return 0
        local name
        for name in munged slurmctld slurmd; do
            pid_of "$name" >/dev/null || die "$name stopped while the node came up; see $dir/log"
        done
        sleep 0.5
    done
    die "the node is not idle after ${timeout} s (sinfo state: '${state:-no answer}')"
}

start() {
    [[ $(id -u) -eq 0 ]] || die "start needs root (it runs munged as the munge user and slurmd as root)"
    install_packages
    id munge >/dev/null 2>&1 || die "there is no munge user (is the munge package installed?)"
    mkdir -p "$dir"/{state,spool,run,log,munge}
    chmod 0755 "$dir"
    chown munge:munge "$dir/munge"
    chmod 0755 "$dir/munge"
    runuser -u munge -- test -x "$dir/munge" \
        || die "the munge user cannot reach $dir (a parent folder is not searchable, e.g. mode 0700); use another DIR"
    export SLURM_CONF=$dir/slurm.conf
    local conf_changed
    write_conf
    if running && ((conf_changed == 0)); then
        say "already running in $dir (slurmctld pid $(pid_of slurmctld), slurmd pid $(pid_of slurmd))"
        wait_idle
        return 0
    fi
    stop >/dev/null  # whatever of it still runs (a changed slurm.conf, e.g. other ports: restart)
    local port
    for port in "$ctld_port" "$slurmd_port"; do
        ! port_in_use "$port" || die "port $port is in use (another Slurm?); choose free ports" \
            "with PULSEHPG_SLURMCTLD_PORT and PULSEHPG_SLURMD_PORT"
    done
    # from here on, a failure stops what was started (its logs stay in $dir)
    trap 'if (($? != 0)); then show_logs; stop >/dev/null; fi' EXIT
    if [[ ! -s $dir/munge/munge.key ]]; then
        runuser -u munge -- mungekey --create --keyfile="$dir/munge/munge.key"
    fi
    runuser -u munge -- munged --socket="$dir/munge/munge.socket" \
        --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
        --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" \
        || die "munged did not start; see $dir/munge/munged.log"
    slurmctld -f "$SLURM_CONF" || die "slurmctld did not start; see $dir/log/slurmctld.log"
    slurmd -f "$SLURM_CONF" || die "slurmd did not start; see $dir/log/slurmd.log"
    for name in munged slurmctld slurmd; do
        local i
        for ((i = 0; i < 50; i++)); do pid_of "$name" >/dev/null && break; sleep 0.1; done
        pid_of "$name" >/dev/null || die "$name wrote no pid file ($dir/${pidfile[$name]}); see $dir/log"
    done
    wait_idle
    trap - EXIT
    say "running in $dir: node $(hostname -s) idle, ports $ctld_port/$slurmd_port; source $dir/env.sh"
}

status() {
    local all=0 name pid
    for name in munged slurmctld slurmd; do
        if pid=$(pid_of "$name"); then say "$name running (pid $pid)"; else say "$name not running"; all=1; fi
    done
    return $all
}

case $action in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
