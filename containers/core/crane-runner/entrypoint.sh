#!/bin/sh
# The crane runner's entrypoint (POSIX sh): materialize the eval's rootfs, run the agent's
# install.sh inside it, then hand over to the harness entrypoint (the arguments: exec "$@").
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
#
# Then: /opt/agent/install.sh is run inside the rootfs (chroot) when it is there and the rootfs
# has a /bin/sh (else it is logged and skipped), and the harness is exec'd with EVAL_ROOTFS and
# EVAL_RECORD exported. Exit codes: buildgen's (2 bad input, 3 registry/extraction failure), 2
# for a bad environment, 1 if install.sh failed.
set -eu

log() { printf 'crane-runner: %s\n' "$*" >&2; }
die() { printf 'crane-runner: error: %s\n' "$*" >&2; exit 2; }

ROOTFS=${EVAL_ROOTFS:-/eval/rootfs}
CACHE=${EVAL_CACHE:-/eval/cache}
RECORD=${EVAL_RECORD:-/eval/record.json}
IMAGE_PYTHONPATH=/opt/buildgen:/opt/buildgen/vendor   # the Dockerfile's ENV PYTHONPATH

# A PYTHONPATH of the caller's own (not the image's) is kept for the harness.
CALLER_PYTHONPATH=${PYTHONPATH:-}
[ "$CALLER_PYTHONPATH" != "$IMAGE_PYTHONPATH" ] || CALLER_PYTHONPATH=

case ${EVAL_BENCHMARK_ENV:-} in
    "" | shared | per-task) ;;
    *) die "EVAL_BENCHMARK_ENV must be 'shared' or 'per-task', not '$EVAL_BENCHMARK_ENV'" ;;
esac

native_platform() {
    machine=$(python3 -c 'import os; print(os.uname().machine)') || die "python3 does not run"
    case $machine in
        x86_64 | amd64) echo linux/amd64 ;;
        aarch64 | arm64) echo linux/arm64 ;;
        armv7l) echo linux/arm/v7 ;;
        ppc64le | s390x | riscv64) echo "linux/$machine" ;;
        *) die "unknown machine '$machine': set EVAL_PLATFORM" ;;
    esac
}

# ---- which images -------------------------------------------------------------------------
task=
if [ -n "${EVAL_BENCHMARK_IMAGE:-}" ]; then
    mode="env"
    key=${EVAL_BENCHMARK_KEY:-}
    case $key in *:*) task=${key#*:} ;; esac
    if [ -n "${EVAL_TASK:-}" ]; then
        if [ -n "$key" ] && [ "$EVAL_TASK" != "$task" ]; then
            die "EVAL_TASK=$EVAL_TASK does not match EVAL_BENCHMARK_KEY=$key"
        fi
        task=$EVAL_TASK
    fi
    what=${key:-$EVAL_BENCHMARK_IMAGE}
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
fi

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

# ---- the agent's install.sh, inside the rootfs --------------------------------------------
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
[ "$#" -gt 0 ] || exit 0
log "handing over to: $*"
exec "$@"
