#!/bin/sh
# The crane runner's entrypoint (POSIX sh): materialize the eval's rootfs, then run the eval
# inside it, sandboxed: the pipeline /opt/eval/run (docs/crane-mode.md, "The eval pipeline"),
# whose result lands in $EVAL_OUTPUT/task/result.json. Given arguments instead, it runs the
# agent's install.sh in the rootfs and hands over to them (exec "$@"): a harness of its own.
#
# Which images (digest-pinned), one of:
#   EVAL_BENCHMARK_IMAGE set   -> `buildgen materialize --from-env`: EVAL_PLATFORM and
#                                 EVAL_<ROLE>_IMAGE/_PLATFORM_DIGEST/_SIZE/_KEY/_PROVIDES exactly
#                                 as `buildgen resolve --format env` prints them (e.g. --env-file)
#   otherwise, from a lockfile -> EVAL_LOCK (default /eval/images.lock.json), EVAL_BENCHMARK
#                                 (B, B:TASK or benchmarks/B[:TASK]), EVAL_TASK, EVAL_AGENT,
#                                 EVAL_GATEWAY (optional), EVAL_PLATFORM (default: this machine's)
# EVAL_BENCHMARK_ENV   shared | per-task: per-task needs a task (EVAL_TASK, or a benchmark key
#                      with ':TASK'); shared refuses one
# EVAL_ROOTFS          the fused rootfs, a new or empty directory (default /eval/rootfs)
# EVAL_CACHE           the blob cache (default /eval/cache; mount it to share pulls)
# EVAL_RECORD          what was used, as JSON (default /eval/record.json)
# EVAL_MIRRORS         pull-through mirror registries tried first, space-separated (HOST[:PORT])
# EVAL_INSECURE_REGISTRIES  registries allowed over plain http, space-separated (loopback is)
# EVAL_CA_BUNDLE       a PEM bundle to verify registries with
# EVAL_OVERLAY         1 (default): the rootfs is an overlay mount of the unpacked benchmark in
#                      the cache when the container may mount (CAP_SYS_ADMIN), else a copy; 0:
#                      always a copy
# Registry credentials come from the Docker config (DOCKER_CONFIG), as for `buildgen publish`.
# A platform this machine cannot run is refused before anything is pulled (exit 2).
#
# The eval (no arguments):
# EVAL_OUTPUT          where result.json and the logs go (default /output; mount it)
# EVAL_TASK            for a shared-environment benchmark: the task to run
# EVAL_SANDBOX         auto (default): bubblewrap when it can start here (it needs
#                      CAP_SYS_ADMIN: `docker run --privileged`, or --cap-add SYS_ADMIN
#                      --security-opt seccomp=unconfined), else chroot; or bwrap, or chroot
# EVAL_AGENT_TIMEOUT   seconds the agent may run (default 600)
# Which sandbox, and why, is logged and written to the record ("sandbox"). Exit: the
# pipeline's (0 when it wrote a result, resolved or not).
#
# With arguments: /opt/agent/install.sh is run inside the rootfs (chroot) when it is there and
# the rootfs has a /bin/sh (else it is logged and skipped), and the arguments are exec'd with
# EVAL_ROOTFS and EVAL_RECORD exported; 1 if install.sh failed.
# Exit codes: buildgen's (2 bad input, 3 registry/extraction failure), 2 for a bad environment.
set -eu

log() { printf 'crane-runner: %s\n' "$*" >&2; }
die() { printf 'crane-runner: error: %s\n' "$*" >&2; exit 2; }

ROOTFS=${EVAL_ROOTFS:-/eval/rootfs}
PIPELINE=/opt/buildgen/pipeline   # the eval pipeline's tree (opt/eval/run), fused into the rootfs
CACHE=${EVAL_CACHE:-/eval/cache}
RECORD=${EVAL_RECORD:-/eval/record.json}
IMAGE_PYTHONPATH=/opt/buildgen:/opt/buildgen/vendor   # the Dockerfile's ENV PYTHONPATH

# A PYTHONPATH of the caller's own (not the image's) is kept for the harness.
CALLER_PYTHONPATH=${PYTHONPATH:-}
[ "$CALLER_PYTHONPATH" != "$IMAGE_PYTHONPATH" ] || CALLER_PYTHONPATH=

case ${EVAL_SANDBOX:-auto} in
    auto | bwrap | chroot) ;;
    *) die "EVAL_SANDBOX must be 'auto', 'bwrap' or 'chroot', not '$EVAL_SANDBOX'" ;;
esac
case ${EVAL_BENCHMARK_ENV:-} in
    "" | shared | per-task) ;;
    *) die "EVAL_BENCHMARK_ENV must be 'shared' or 'per-task', not '$EVAL_BENCHMARK_ENV'" ;;
esac

# This machine's platform, as buildgen names it (crane/machine.py).
native_platform() {
    found=$(PYTHONPATH=$IMAGE_PYTHONPATH python3 -c 'from buildgen.crane.machine import native_platform
print(native_platform() or "")') || die "python3 does not run"
    [ -n "$found" ] || die "unknown machine '$(uname -m)': set EVAL_PLATFORM"
    echo "$found"
}

# ---- which images -------------------------------------------------------------------------
task=
if [ -n "${EVAL_BENCHMARK_IMAGE:-}" ]; then
    mode="env"
    key=${EVAL_BENCHMARK_KEY:-}
    case $key in *:*) task=${key#*:} ;; esac
    if [ -n "${EVAL_TASK:-}" ]; then
        if [ -n "$task" ] && [ "$EVAL_TASK" != "$task" ]; then
            die "EVAL_TASK=$EVAL_TASK does not match EVAL_BENCHMARK_KEY=$key"
        fi
        task=$EVAL_TASK
    fi
    what=${key:-$EVAL_BENCHMARK_IMAGE}
    benchmark_key=${key%%:*}
    agent_key=${EVAL_AGENT_KEY:-}
    gateway_key=${EVAL_GATEWAY_IMAGE:+${EVAL_GATEWAY_KEY:-}}
else
    mode="lock"
    benchmark=${EVAL_BENCHMARK:-}
    agent=${EVAL_AGENT:-}
    gateway=${EVAL_GATEWAY:-}
    if [ -z "$benchmark" ] || [ -z "$agent" ]; then
        die "no images: set EVAL_BENCHMARK_IMAGE etc. (\`buildgen resolve --format env\`), or" \
            "EVAL_BENCHMARK and EVAL_AGENT (and EVAL_LOCK) to take them from the lockfile"
    fi
    benchmark=${benchmark#benchmarks/}
    agent=${agent#agents/}
    gateway=${gateway#models/}
    case $benchmark in
        *:*) task=${benchmark#*:}; benchmark=${benchmark%%:*} ;;
    esac
    if [ -n "${EVAL_TASK:-}" ]; then
        if [ -n "$task" ] && [ "$EVAL_TASK" != "$task" ]; then
            die "EVAL_TASK=$EVAL_TASK does not match EVAL_BENCHMARK=$EVAL_BENCHMARK"
        fi
        task=$EVAL_TASK
    fi
    lock=${EVAL_LOCK:-/eval/images.lock.json}
    [ -f "$lock" ] || die "no lockfile at $lock: mount one and set EVAL_LOCK, or pass the" \
        "references in EVAL_* variables (\`buildgen resolve --format env\`)"
    platform=${EVAL_PLATFORM:-$(native_platform)}
    what="benchmarks/$benchmark${task:+:$task}"
    benchmark_key=benchmarks/$benchmark
    agent_key=agents/$agent
    gateway_key=${gateway:+models/$gateway}
fi

case $task in
    *[!A-Za-z0-9_.-]*) die "the task '$task' is not a task id (letters, digits and '_.-')" ;;
esac
case ${EVAL_BENCHMARK_ENV:-} in
    per-task)
        [ -n "$task" ] || die "EVAL_BENCHMARK_ENV=per-task needs a task: set EVAL_TASK, or give" \
            "the benchmark as B:TASK (EVAL_BENCHMARK, or EVAL_BENCHMARK_KEY=benchmarks/B:TASK)"
        ;;
    shared)
        [ -z "$task" ] || die "EVAL_BENCHMARK_ENV=shared, but a task is given ($task)"
        ;;
esac

# ---- materialize --------------------------------------------------------------------------
materialize() {
    set -- materialize --rootfs "$ROOTFS" --cache "$CACHE" --record "$RECORD"
    set -f  # split the lists on blanks, never glob them
    for mirror in ${EVAL_MIRRORS:-}; do set -- "$@" --mirror "$mirror"; done
    for host in ${EVAL_INSECURE_REGISTRIES:-}; do set -- "$@" --insecure-registry "$host"; done
    set +f
    [ -z "${EVAL_CA_BUNDLE:-}" ] || set -- "$@" --ca-bundle "$EVAL_CA_BUNDLE"
    # An overlay rootfs when this container may mount (it goes away with the container),
    # else a copy of the unpacked image.
    [ "${EVAL_OVERLAY:-1}" = 0 ] || set -- "$@" --overlay
    set -- "$@" --pipeline "$PIPELINE" --runnable
    if [ "$mode" = env ]; then
        set -- "$@" --from-env
    else
        set -- "$@" --lock "$lock" --benchmark "$benchmark" --agent "$agent" --platform "$platform"
        [ -z "$task" ] || set -- "$@" --task "$task"
        [ -z "$gateway" ] || set -- "$@" --gateway "$gateway"
    fi
    log "buildgen $*"
    PYTHONPATH=$IMAGE_PYTHONPATH${CALLER_PYTHONPATH:+:$CALLER_PYTHONPATH} python3 -m buildgen "$@"
}

# ---- the eval (no arguments) ----------------------------------------------------------------
OUTPUT=${EVAL_OUTPUT:-/output}
BWRAP_NAMESPACES="--unshare-pid --unshare-ipc --unshare-uts --unshare-net --unshare-cgroup-try"

# Note in the record which sandbox runs the eval, and why; print the images used, for
# result.json: {role: {key, reference, manifest}}.
record_sandbox() {
    PYTHONPATH=$IMAGE_PYTHONPATH python3 -c 'import json, sys
from pathlib import Path
from buildgen.fsutil import write_atomic
path, kind, reason = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
record = json.loads(path.read_text())
record["sandbox"] = {"kind": kind, "reason": reason}
write_atomic(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
print(json.dumps({role: {k: entry[k] for k in ("key", "reference", "manifest")}
                  for role, entry in sorted(record["images"].items())}, sort_keys=True))' \
        "$RECORD" "$1" "$2"
}

# The pipeline's environment, one NAME=VALUE a line: the eval's identity, nothing of the
# runner's (no credentials, no cache or lockfile paths).
eval_env() {
    for value in "$benchmark_key" "$task" "$agent_key" "$gateway_key" "$images" \
        "${EVAL_AGENT_TIMEOUT:-600}"; do
        case $value in *"$NL"*) die "a value for the pipeline's environment has a newline" ;; esac
    done
    printf '%s\n' "PATH=/usr/local/bin:/usr/bin:/bin" "EVAL_MODE=crane" "EVAL_SANDBOX=$1" \
        "EVAL_BENCHMARK=$benchmark_key" "EVAL_TASK=$task" "EVAL_AGENT=$agent_key" \
        "EVAL_GATEWAY=$gateway_key" "EVAL_IMAGES=$images" "EVAL_OUTPUT=/output" \
        "EVAL_AGENT_TIMEOUT=${EVAL_AGENT_TIMEOUT:-600}"
}
NL='
'

# bubblewrap: the rootfs as /, a fresh /proc, a minimal /dev, /output bound from the runner;
# new mount, pid, ipc, uts, network (loopback only) and cgroup namespaces.
run_bwrap() {
    set -f
    # shellcheck disable=SC2086  # the namespace flags are words
    set -- --bind "$ROOTFS" / --proc /proc --dev /dev --bind "$OUTPUT" /output \
        $BWRAP_NAMESPACES --die-with-parent --new-session --clearenv --chdir /
    pairs=$(eval_env bwrap) || exit
    # In its own pid namespace, the pipeline may sweep the agent's processes with kill(-1).
    pairs="$pairs${NL}EVAL_PID_NAMESPACE=own"
    old_ifs=$IFS
    IFS=$NL
    for pair in $pairs; do set -- "$@" --setenv "${pair%%=*}" "${pair#*=}"; done
    IFS=$old_ifs
    set +f
    exec bwrap "$@" /opt/eval/run
}

# The rootfs's directories the runner writes to or binds over: never through a symlink.
real_dirs() {
    for dir in "$@"; do
        [ ! -L "$ROOTFS/$dir" ] || die "the rootfs's /$dir is a symlink: refusing to enter it"
        mkdir -p "$ROOTFS/$dir"
    done
}

# Before a chroot: /dev/null and its kin in the rootfs (images have an empty /dev; a shell's
# `2>/dev/null` would make a regular file).
prepare_chroot() {
    real_dirs dev
    for node in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9"; do
        # shellcheck disable=SC2086  # name, major, minor
        set -- $node
        [ -e "$ROOTFS/dev/$1" ] || [ -L "$ROOTFS/dev/$1" ] ||
            mknod -m 0666 "$ROOTFS/dev/$1" c "$2" "$3" ||
            die "cannot make /dev/$1 in the rootfs (no CAP_MKNOD?)"
    done
}

# chroot: the runner's own namespaces; the rootfs's /output is copied out afterwards.
run_chroot() {
    prepare_chroot
    pairs=$(eval_env chroot) || exit
    # The runner is pid 1, or the child of a container's init (docker run [--init]): its pid
    # namespace holds nothing but the eval, so the pipeline may sweep the agent's leftovers with
    # kill(-1) as the agent's uid (there is no /proc in the chroot).
    init=$(cat /proc/1/comm 2>/dev/null || true)
    case "$$:$init" in
        1:* | *:docker-init | *:tini | *:dumb-init | *:catatonit) pairs="$pairs${NL}EVAL_PID_NAMESPACE=own" ;;
    esac
    chroot=$(command -v chroot) || die "no chroot here (coreutils)"
    status=0
    # shellcheck disable=SC2086  # one NAME=VALUE a line
    (IFS=$NL; set -f; exec env -i $pairs "$chroot" "$ROOTFS" /opt/eval/run) || status=$?
    # The files the pipeline wrote, read from fds inside the rootfs (no link followed out).
    PYTHONPATH=$IMAGE_PYTHONPATH python3 -c 'import sys
from pathlib import Path
from buildgen.crane.rootpath import copy_files_out
copy_files_out(Path(sys.argv[1]), "/output/task", Path(sys.argv[2]))' "$ROOTFS" "$OUTPUT/task" ||
        die "cannot copy /output/task out of the rootfs"
    exit "$status"
}

run_eval() {
    real_dirs output proc dev  # bwrap binds or mounts over them; chroot copies /output out
    mkdir -p "$OUTPUT"
    kind=${EVAL_SANDBOX:-auto}
    reason="asked for (EVAL_SANDBOX=$kind)"
    if [ "$kind" = auto ]; then
        set -f
        if ! command -v bwrap >/dev/null 2>&1; then
            kind=chroot reason="bwrap is not installed"
        # shellcheck disable=SC2086  # the namespace flags are words
        elif probe=$(bwrap --bind "$ROOTFS" / --proc /proc --dev /dev $BWRAP_NAMESPACES \
                --die-with-parent /bin/sh -c : 2>&1); then
            kind=bwrap reason="bwrap starts here"
        else
            kind=chroot reason="bwrap cannot start here: $(printf '%s' "$probe" | head -n 1)"
        fi
        set +f
    fi
    log "sandbox: $kind ($reason)"
    images=$(record_sandbox "$kind" "$reason") || die "cannot write the record $RECORD"
    log "running the eval: /opt/eval/run, output in $OUTPUT/task"
    if [ "$kind" = bwrap ]; then run_bwrap; else run_chroot; fi
}

record_dir=${RECORD%/*}
if [ -n "$record_dir" ] && [ "$record_dir" != "$RECORD" ] && [ ! -d "$record_dir" ]; then
    mkdir -p "$record_dir"
fi
log "materializing $what into $ROOTFS (${mode})"
status=0
materialize || status=$?
[ "$status" -eq 0 ] || { log "materialize failed (exit $status)"; exit "$status"; }

# From here on nothing of buildgen's is needed: the harness gets the caller's environment.
if [ -n "$CALLER_PYTHONPATH" ]; then export PYTHONPATH="$CALLER_PYTHONPATH"; else unset PYTHONPATH; fi
EVAL_ROOTFS=$ROOTFS
EVAL_RECORD=$RECORD
export EVAL_ROOTFS EVAL_RECORD

# ---- no arguments: the eval, the pipeline inside the rootfs, sandboxed ----------------------
[ "$#" -gt 0 ] || run_eval  # never returns

# ---- arguments: the agent's install.sh inside the rootfs, then a harness of its own ---------
in_rootfs() {
    if command -v chroot >/dev/null 2>&1; then
        chroot "$ROOTFS" "$@"
    else
        python3 -c 'import os, sys; os.chroot(sys.argv[1]); os.chdir("/"); os.execv(sys.argv[2], sys.argv[2:])' \
            "$ROOTFS" "$@"
    fi
}

install=/opt/agent/install.sh
if [ ! -e "$ROOTFS$install" ] && [ ! -L "$ROOTFS$install" ]; then
    log "no $install in the rootfs: nothing to install"
elif ! in_rootfs /bin/sh -c 'exit 0' >/dev/null 2>&1; then
    log "the rootfs has no working /bin/sh: skipping $install"
else
    prepare_chroot
    log "running $install in the rootfs"
    status=0
    # shellcheck disable=SC2016  # $1 expands in the rootfs's shell
    in_rootfs /bin/sh -c 'cd / && if [ -x "$1" ]; then exec "$1"; else exec /bin/sh "$1"; fi' \
        install.sh "$install" || status=$?
    if [ "$status" -ne 0 ]; then
        printf 'crane-runner: error: %s failed (exit %s)\n' "$install" "$status" >&2
        exit 1
    fi
fi

# ---- the harness ------------------------------------------------------------------------
log "handing over to: $*"
exec "$@"
