# scripts/docker_lib.sh — a Docker engine and the Debian 12 base image, for scripts that need
# them on a machine with no registry (tests/docker_smoke.sh, bench/dist_train.sh).
#
# Source it, with say() and fail() defined, then:
#   docker_engine_up WORKDIR    starts dockerd when none answers (sets STARTED_DOCKERD to its
#                               pid); returns 3 when no engine can run at all
#   docker_base_image BASE WORKDIR
#                               makes BASE (debian:12-slim) with debootstrap + docker import
#                               from this host's apt mirror when it is missing (sets MADE_BASE=1)
# The caller removes what the two made (STARTED_DOCKERD, MADE_BASE) when it is done.

docker_engine_up() {
    local WORK=$1
    if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null; then
        echo "NOT RUN: docker/dockerd are not installed (bash scripts/dev setup)" >&2
        return 3
    fi
    if docker info >/dev/null 2>&1; then
        say "a Docker engine answers already: using it"
        return 0
    fi
    say "no Docker engine answers: starting dockerd"
    setsid dockerd >"$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 300); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$STARTED_DOCKERD" 2>/dev/null || break
        sleep 0.1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "NOT RUN: dockerd could not start; its last lines:" >&2
        tail -15 "$WORK/dockerd.log" | sed 's/^/    /' >&2
        STARTED_DOCKERD=""
        return 3
    fi
    say "dockerd (pid $STARTED_DOCKERD) is up: $(docker info -f '{{.ServerVersion}}, storage {{.Driver}}' 2>/dev/null)"
}

docker_base_image() {
    local BASE=$1 WORK=$2 mirror security
    if docker image inspect "$BASE" >/dev/null 2>&1; then
        say "base image $BASE exists"
    else
        # the mirror this host's apt uses
        mirror=$(grep -hoE '^(URIs:|deb) +[^ ]*https?://[^ ]+' /etc/apt/sources.list.d/*.sources \
                 /etc/apt/sources.list 2>/dev/null | grep -v security | head -1 | awk '{print $NF}' || true)
        mirror=${mirror:-http://deb.debian.org/debian}
        say "making $BASE with debootstrap from $mirror"
        debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
            { tail -20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
        # trimmed as Debian's slim images are: no docs, man pages or locales, no apt caches
        rm -rf "$WORK"/rootfs/usr/share/{doc,man,info,locale}/* "$WORK"/rootfs/var/lib/apt/lists/* \
               "$WORK"/rootfs/var/cache/apt/*.bin "$WORK"/rootfs/var/log/*.log
        cat >"$WORK/rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
        echo 'APT::Install-Recommends "false";' >"$WORK/rootfs/etc/apt/apt.conf.d/docker-norecommends"
        security=${mirror%/debian}/debian-security
        rm -f "$WORK/rootfs/etc/apt/sources.list"
        cat >"$WORK/rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        tar -C "$WORK/rootfs" -c . | docker import - "$BASE" >/dev/null || fail "docker import"
        MADE_BASE=1
        rm -rf "$WORK/rootfs"
        say "imported $BASE ($(docker image inspect -f '{{.Size}}' "$BASE" | awk '{printf "%.0f MB", $1/1e6}'))"
    fi
}
