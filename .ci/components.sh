#!/usr/bin/env bash
# .ci/components.sh -- install, start, stop and check the real components the
# buildgen test-suite talks to (see /work/shared/ENVIRONMENT.md for the facts
# this is based on).
#
#   bash .ci/components.sh install   # idempotent; a fast no-op once done
#   bash .ci/components.sh start     # containerd + dockerd in the background;
#                                    # prints `export DOCKER_HOST=...` on stdout
#   bash .ci/components.sh stop      # stops both daemons
#   bash .ci/components.sh status    # is the engine answering?
#   bash .ci/components.sh check     # verifies every component, non-zero if any is missing
#   bash .ci/components.sh logs      # the daemons' last log lines (and any Go panic), after a failure
#   bash .ci/components.sh env       # prints the `export DOCKER_HOST=...` line
#
# Usage from another script:   eval "$(bash .ci/components.sh start)"
#                   or later:  . /run/buildgen-ci/env
#
# What it provides
#   * from bookworm (apt-get install): docker-registry (CNCF distribution 2.8),
#     skopeo, umoci, busybox-static, runc, iptables, ca-certificates
#   * from trixie (.debs fetched with apt-get download against a private,
#     temporary source list and unpacked with dpkg -x into a private prefix,
#     never installed): docker.io (dockerd 26.1, docker-proxy), containerd 1.7
#     (+ containerd-shim-runc-v2), tini (docker-init), docker-buildx 0.13
#   * the buildx plugin is copied to /usr/local/lib/docker/cli-plugins and
#     ~/.docker/cli-plugins; the existing /usr/local/bin/docker stays the client.
#
# Everything the daemons write lives under $BUILDGEN_CI_STATE (default
# /var/lib/buildgen-ci) and $BUILDGEN_CI_RUN (default /run/buildgen-ci); the
# engine's socket is unix://$BUILDGEN_CI_RUN/docker.sock, not /var/run/docker.sock.
#
# Networking: the default bridge (docker0) with iptables is used (verified to
# work here: RUN steps, bridge containers, --network host).  If dockerd cannot
# start that way, start falls back (with a warning) to "iptables": false (the
# docker0 bridge still exists, so RUN steps keep working, no NAT/port
# publishing), and then to "bridge": "none" (only --network host/none work;
# RUN steps then fail with "network bridge not found" unless the build uses
# --network=host or none).  Force a mode with
# BUILDGEN_CI_NETWORK=bridge|noiptables|none; the mode in use is written to
# $BUILDGEN_CI_RUN/network-mode.
set -euo pipefail

PREFIX=${BUILDGEN_CI_PREFIX:-/opt/buildgen-ci}
ENGINE=$PREFIX/engine
STATE=${BUILDGEN_CI_STATE:-/var/lib/buildgen-ci}
RUN=${BUILDGEN_CI_RUN:-/run/buildgen-ci}
LOGDIR=$STATE/log
NETWORK=${BUILDGEN_CI_NETWORK:-auto}     # auto | bridge | noiptables | none
START_TIMEOUT=${BUILDGEN_CI_START_TIMEOUT:-60}

CONTAINERD_SOCK=$RUN/containerd/containerd.sock
DOCKER_SOCK=$RUN/docker.sock
ENV_FILE=$RUN/env
DOCKER_HOST_VALUE=unix://$DOCKER_SOCK
CONTAINERD_PIDFILE=$RUN/containerd.pid
DOCKERD_PIDFILE=$RUN/docker.pid

# Debian packages.  Bump RECIPE when anything here changes: install re-runs.
BOOKWORM_PKGS=(ca-certificates docker-registry skopeo umoci busybox-static runc iptables debootstrap bubblewrap
               libsystemd0 libcap2 libgcrypt20 liblzma5 libzstd1 liblz4-1 xz-utils)
TRIXIE_PKGS=(docker.io containerd tini docker-buildx)
RECIPE="r2 trixie: ${TRIXIE_PKGS[*]}"
ENGINE_BINS=(usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/containerd usr/bin/containerd-shim-runc-v2
             usr/bin/ctr usr/bin/docker-init usr/libexec/docker/cli-plugins/docker-buildx)
PLUGIN_DIRS=(/usr/local/lib/docker/cli-plugins "${HOME:-/root}/.docker/cli-plugins")

# PATH for the daemons: the private prefix first (dockerd, docker-proxy,
# docker-init, containerd, containerd-shim-runc-v2), then the system's
# (runc and iptables from bookworm live in /usr/sbin).
DAEMON_PATH=$ENGINE/usr/sbin:$ENGINE/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log()  { printf '[components] %s\n' "$*" >&2; }
warn() { printf '[components] WARNING: %s\n' "$*" >&2; }
die()  { printf '[components] ERROR: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

export DEBIAN_FRONTEND=noninteractive

CLEANUP=()
cleanup() { [ ${#CLEANUP[@]} -eq 0 ] || rm -rf "${CLEANUP[@]}"; }
trap cleanup EXIT

# ---------------------------------------------------------------- install ---

pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

install_bookworm() {
    local missing=() p
    for p in "${BOOKWORM_PKGS[@]}"; do pkg_installed "$p" || missing+=("$p"); done
    if [ ${#missing[@]} -eq 0 ]; then
        log "bookworm packages already installed"
        return 0
    fi
    log "apt-get update (system sources)"
    apt-get update -q >&2 || die "apt-get update failed"
    log "apt-get install: ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
}

# The archive URI of the system's main Debian source, read at run time from
# /etc/apt/sources.list.d/debian.sources (deb822), falling back to
# /etc/apt/sources.list (one-line format).  No host name is written here.
debian_uri() {
    local f=/etc/apt/sources.list.d/debian.sources uri=""
    if [ -r "$f" ]; then
        # the first stanza whose Suites contain the plain release codename
        # (not -security / -updates); else the first URIs line at all
        uri=$(awk '
            BEGIN { RS=""; FS="\n" }
            {
                u=""; plain=0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/)   { split($i, a, /[ \t]+/); u = a[2] }
                    if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/)
                                           for (j = 2; j <= n; j++) if (s[j] !~ /-/ && s[j] != "") plain = 1 }
                }
                if (u != "" && first == "") first = u
                if (u != "" && plain && best == "") best = u
            }
            END { print (best != "" ? best : first) }' "$f")
    fi
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
              /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || die "cannot read the Debian archive URI from /etc/apt/sources.list.d/debian.sources"
    printf '%s\n' "${uri%/}"
}

engine_installed() {
    local b
    [ -f "$ENGINE/.recipe" ] && [ "$(cat "$ENGINE/.recipe")" = "$RECIPE" ] || return 1
    for b in "${ENGINE_BINS[@]}"; do [ -x "$ENGINE/$b" ] || return 1; done
    return 0
}

install_engine() {
    if engine_installed; then
        log "engine already unpacked in $ENGINE"
        return 0
    fi
    local tmp uri f
    tmp=$(mktemp -d /tmp/buildgen-ci-trixie.XXXXXX)
    CLEANUP+=("$tmp")
    uri=$(debian_uri)
    mkdir -p "$tmp/lists/partial" "$tmp/archives/partial" "$tmp/cache" "$tmp/debs" "$tmp/root"
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s trixie main\n' "$uri" \
        > "$tmp/trixie.list"
    local apt_opts=(
        -oDir::Etc::SourceList="$tmp/trixie.list"
        -oDir::Etc::SourceParts=/dev/null
        -oDir::State::Lists="$tmp/lists"
        -oDir::Cache::Archives="$tmp/archives"
        -oDir::Cache="$tmp/cache"            # keep the system's pkgcache.bin untouched
        -oAPT::Sandbox::User=root            # private dirs are not readable by _apt
        -q
    )
    log "apt-get update (private trixie source list)"
    apt-get "${apt_opts[@]}" update >&2 || die "apt-get update against trixie failed"
    log "apt-get download (trixie): ${TRIXIE_PKGS[*]}"
    (cd "$tmp/debs" && apt-get "${apt_opts[@]}" download "${TRIXIE_PKGS[@]}" >&2) \
        || die "apt-get download ${TRIXIE_PKGS[*]} from trixie failed"
    for f in "$tmp"/debs/*.deb; do
        log "dpkg -x $(basename "$f")"
        dpkg -x "$f" "$tmp/root"
    done
    # every binary must be present and its shared libraries resolvable
    local b missing_libs
    for b in "${ENGINE_BINS[@]}"; do
        [ -x "$tmp/root/$b" ] || die "trixie packages did not provide $b"
        if missing_libs=$(ldd "$tmp/root/$b" 2>/dev/null | grep 'not found'); then
            die "$b lacks shared libraries: $missing_libs"
        fi
    done
    {
        for f in "$tmp"/debs/*.deb; do dpkg-deb -W --showformat='${Package} ${Version}\n' "$f"; done
    } > "$tmp/root/.versions"
    printf '%s\n' "$RECIPE" > "$tmp/root/.recipe"
    mkdir -p "$PREFIX"
    rm -rf "$ENGINE.old"
    [ -e "$ENGINE" ] && mv "$ENGINE" "$ENGINE.old"
    mv "$tmp/root" "$ENGINE"
    rm -rf "$ENGINE.old"
    log "engine unpacked in $ENGINE:"
    sed 's/^/[components]   /' "$ENGINE/.versions" >&2
}

install_buildx_plugin() {
    local src=$ENGINE/usr/libexec/docker/cli-plugins/docker-buildx d
    for d in "${PLUGIN_DIRS[@]}"; do
        if ! cmp -s "$src" "$d/docker-buildx" 2>/dev/null; then
            mkdir -p "$d"
            install -m 0755 "$src" "$d/docker-buildx.tmp"
            mv -f "$d/docker-buildx.tmp" "$d/docker-buildx"
            log "buildx plugin installed in $d"
        fi
    done
}

cmd_install() {
    need_root
    command -v docker >/dev/null || die "no docker client on PATH (expected /usr/local/bin/docker)"
    install_bookworm
    install_engine
    install_buildx_plugin
    log "install done"
}

# ------------------------------------------------------------ start / stop ---

# pid from a pidfile if that process is alive and is the expected program
live_pid() {   # pidfile comm
    local pid
    [ -s "$1" ] || return 1
    pid=$(tr -dc '0-9' < "$1")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
    alive "$pid" || return 1
    printf '%s\n' "$pid"
}

# running (not gone, not a zombie waiting to be reaped)
alive() {
    local st
    st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

docker_ok() { DOCKER_HOST=$DOCKER_HOST_VALUE timeout 10 docker info >/dev/null 2>&1; }

print_env() {
    printf 'export DOCKER_HOST=%s\n' "$DOCKER_HOST_VALUE"
}

write_env() {
    mkdir -p "$RUN"
    print_env > "$ENV_FILE.tmp"
    mv -f "$ENV_FILE.tmp" "$ENV_FILE"
}

tail_logs() {
    local f
    for f in "$LOGDIR/containerd.log" "$LOGDIR/dockerd.log"; do
        [ -f "$f" ] || continue
        printf '[components] ----- last lines of %s -----\n' "$f" >&2
        tail -n 40 "$f" >&2 || true
    done
}

write_configs() {   # network mode: bridge | noiptables | none
    mkdir -p "$STATE/containerd" "$STATE/containerd-opt" "$STATE/docker" "$RUN/containerd" "$RUN/docker" "$LOGDIR"
    cat > "$STATE/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd-opt"
EOF
    local net
    case $1 in
        bridge)     net='' ;;
        noiptables) net='"iptables": false, "ip-masq": false,' ;;
        none)       net='"bridge": "none", "iptables": false, "ip-forward": false, "ip-masq": false,' ;;
    esac
    # insecure-registries: 127.0.0.0/8 is dockerd's built-in default (verified:
    # bake --push / output push=true to http://127.0.0.1:PORT and to
    # localhost:PORT work without it, and without registry.insecure=true in the
    # output CSV); listed explicitly so the plain-http loopback registries the
    # tests use stay allowed.  Non-loopback plain-http registries would need
    # adding here.
    cat > "$STATE/daemon.json" <<EOF
{
  "data-root": "$STATE/docker",
  "exec-root": "$RUN/docker",
  "pidfile": "$DOCKERD_PIDFILE",
  "group": "root",
  "hosts": ["$DOCKER_HOST_VALUE"],
  "containerd": "$CONTAINERD_SOCK",
  "containerd-namespace": "buildgen-ci",
  "containerd-plugins-namespace": "buildgen-ci-plugins",
  "features": {"containerd-snapshotter": true, "buildkit": true},
  "insecure-registries": ["127.0.0.0/8"],
  $net
  "log-level": "info"
}
EOF
}

start_containerd() {
    if live_pid "$CONTAINERD_PIDFILE" containerd >/dev/null; then
        log "containerd already running (pid $(live_pid "$CONTAINERD_PIDFILE" containerd))"
        return 0
    fi
    rm -f "$CONTAINERD_PIDFILE" "$CONTAINERD_SOCK" "$CONTAINERD_SOCK.ttrpc"
    [ ! -f "$LOGDIR/containerd.log" ] || mv -f "$LOGDIR/containerd.log" "$LOGDIR/containerd.log.1"
    log "starting containerd (log: $LOGDIR/containerd.log)"
    PIDFILE=$CONTAINERD_PIDFILE PATH=$DAEMON_PATH setsid bash -c 'echo $$ > "$PIDFILE"; exec "$@"' containerd \
        "$ENGINE/usr/bin/containerd" --config "$STATE/containerd.toml" \
        --address "$CONTAINERD_SOCK" --root "$STATE/containerd" --state "$RUN/containerd" \
        </dev/null >>"$LOGDIR/containerd.log" 2>&1 &
    local i
    for ((i = 0; i < START_TIMEOUT * 2; i++)); do
        if [ -S "$CONTAINERD_SOCK" ] && "$ENGINE/usr/bin/ctr" --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; then
            return 0
        fi
        if ((i > 2)) && ! live_pid "$CONTAINERD_PIDFILE" containerd >/dev/null; then
            tail_logs
            die "containerd exited during start-up"
        fi
        sleep 0.5
    done
    tail_logs
    die "containerd did not answer on $CONTAINERD_SOCK within ${START_TIMEOUT}s"
}

start_dockerd() {   # returns 1 (after stopping it) if dockerd fails to come up
    rm -f "$DOCKERD_PIDFILE" "$DOCKER_SOCK"
    [ ! -f "$LOGDIR/dockerd.log" ] || mv -f "$LOGDIR/dockerd.log" "$LOGDIR/dockerd.log.1"
    log "starting dockerd (log: $LOGDIR/dockerd.log)"
    PATH=$DAEMON_PATH setsid "$ENGINE/usr/sbin/dockerd" --config-file "$STATE/daemon.json" \
        </dev/null >>"$LOGDIR/dockerd.log" 2>&1 &
    local i
    for ((i = 0; i < START_TIMEOUT * 2; i++)); do
        if [ -S "$DOCKER_SOCK" ] && docker_ok; then
            return 0
        fi
        if ((i > 4)) && ! live_pid "$DOCKERD_PIDFILE" dockerd >/dev/null && ! pgrep_dockerd_ours >/dev/null; then
            return 1
        fi
        sleep 0.5
    done
    return 1
}

# dockerd writes its pidfile only after a while; before that find it by its
# --config-file argument (exact match on our own config path, nothing broader)
pgrep_dockerd_ours() {
    local p
    for p in /proc/[0-9]*; do
        [ "$(cat "$p/comm" 2>/dev/null)" = dockerd ] && alive "${p#/proc/}" || continue
        tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -qF -- "--config-file $STATE/daemon.json" || continue
        echo "${p#/proc/}"
        return 0
    done
    return 1
}

stop_pid() {   # pid name
    local pid=$1 name=$2 i
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 60; i++)); do
        alive "$pid" || return 0
        sleep 0.5
    done
    warn "$name (pid $pid) did not exit in 30s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
}

stop_dockerd() {
    local pid
    pid=$(live_pid "$DOCKERD_PIDFILE" dockerd || pgrep_dockerd_ours || true)
    [ -n "$pid" ] && stop_pid "$pid" dockerd
    rm -f "$DOCKERD_PIDFILE" "$DOCKER_SOCK"
}

cmd_start() {
    need_root
    engine_installed || die "engine not installed: run 'bash $0 install' first"
    if docker_ok; then
        log "engine already running at $DOCKER_HOST_VALUE"
        write_env
        print_env
        return 0
    fi
    local t0=$SECONDS mode modes
    # a dockerd that is alive but not answering is stale: restart it
    stop_dockerd
    case $NETWORK in
        auto) modes=(bridge noiptables none) ;;
        bridge|noiptables|none) modes=("$NETWORK") ;;
        *) die "BUILDGEN_CI_NETWORK must be auto, bridge, noiptables or none (got $NETWORK)" ;;
    esac
    write_configs "${modes[0]}"
    start_containerd
    for mode in "${modes[@]}"; do
        write_configs "$mode"
        if start_dockerd; then
            break
        fi
        stop_dockerd
        if [ "$mode" = "${modes[-1]}" ]; then
            tail_logs
            die "dockerd did not start within ${START_TIMEOUT}s (network mode: $mode)"
        fi
        warn "dockerd did not start with network mode '$mode'; last log lines:"
        tail -n 20 "$LOGDIR/dockerd.log" >&2 || true
        case $mode in
            bridge) warn "retrying with \"iptables\": false (docker0 bridge without NAT/port publishing)" ;;
            noiptables) warn "retrying with \"bridge\": \"none\": only --network host/none work, and RUN steps need --network=host or none" ;;
        esac
    done
    printf '%s\n' "$mode" > "$RUN/network-mode"
    write_env
    log "engine up in $((SECONDS - t0))s (network: $mode); DOCKER_HOST=$DOCKER_HOST_VALUE (also in $ENV_FILE)"
    print_env
}

cmd_stop() {
    need_root
    stop_dockerd
    local pid
    if pid=$(live_pid "$CONTAINERD_PIDFILE" containerd); then
        stop_pid "$pid" containerd
    fi
    rm -f "$CONTAINERD_PIDFILE" "$CONTAINERD_SOCK" "$CONTAINERD_SOCK.ttrpc"
    log "stopped"
}

cmd_status() {
    if docker_ok; then
        log "engine running at $DOCKER_HOST_VALUE (network: $(cat "$RUN/network-mode" 2>/dev/null || echo '?'))"
        print_env
    else
        log "engine not running"
        return 1
    fi
}

# ------------------------------------------------------------------ check ---

version_ge() {   # a b: is a >= b (dotted numbers)
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

cmd_check() {
    local bad=() v host=${DOCKER_HOST:-}
    if [ -z "$host" ]; then
        host=$DOCKER_HOST_VALUE
    fi
    check_one() {   # name command...
        local name=$1; shift
        if v=$("$@" 2>&1); then
            log "ok: $name: $(printf '%s' "$v" | head -n1)"
        else
            log "MISSING: $name ($(printf '%s' "$v" | tail -n1))"
            bad+=("$name")
        fi
    }
    check_one docker-registry docker-registry --version
    check_one skopeo skopeo --version
    check_one umoci umoci --version
    check_one busybox sh -c '/bin/busybox 2>&1 | head -n1 | grep -q "^BusyBox" && /bin/busybox | head -n1'
    check_one bubblewrap bwrap --version
    check_one runc runc --version
    check_one docker-client docker --version
    check_one "docker engine ($host)" env DOCKER_HOST="$host" timeout 20 \
        docker info --format '{{.ServerVersion}} driver={{.Driver}} {{.DriverStatus}}'
    if v=$(docker buildx version 2>&1) \
        && ver=$(printf '%s' "$v" | grep -oE ' v?[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n1 | tr -d ' v') \
        && [ -n "$ver" ] && version_ge "$ver" 0.13; then
        log "ok: docker buildx: $v"
    else
        log "MISSING: docker buildx >= 0.13 (${v:-not found})"
        bad+=("docker-buildx>=0.13")
    fi
    if [ ${#bad[@]} -gt 0 ]; then
        die "missing components: ${bad[*]}"
    fi
    log "all components present"
}

# what the daemons said, for a failed run: the last lines of their logs, and a Go panic whole
cmd_logs() {
    local f
    for f in "$LOGDIR/containerd.log" "$LOGDIR/dockerd.log"; do
        [ -f "$f" ] || continue
        if grep -q '^panic: ' "$f"; then
            printf '[components] ----- %s: the daemon crashed -----\n' "$f" >&2
            sed -n '/^panic: /,/^$/p' "$f" | head -n 60 >&2
        fi
    done
    tail_logs
}

# -------------------------------------------------------------------- main ---

case ${1:-} in
    install) cmd_install ;;
    start)   cmd_start ;;
    stop)    cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status)  cmd_status ;;
    check)   cmd_check ;;
    logs)    cmd_logs ;;
    env)     print_env ;;
    *) printf 'usage: %s install|start|stop|restart|status|check|logs|env\n' "$0" >&2; exit 2 ;;
esac
