#!/usr/bin/env bash
# tests/docker_smoke.sh — the Docker image built and used as a user would, from nothing.
#
# Starts a Docker engine when none answers, makes the base image the Dockerfile names
# (debootstrap + docker import: there is no registry here) when it is missing, builds the image,
# then: runs it on a volume with --listen on another port (the health probe must find it), waits
# for `healthy`, checks it runs as uid 10001, uploads images, reads /embed/{id},
# /neighbors/{id} and the dashboard (page, script, a thumbnail), `docker stop`s it mid-training (exit code 0 inside the 10 s grace; the seconds
# are printed), restarts on the same volume (every image there byte for byte, a serving version
# no older than before), checks that a root-owned bind mount fails with a clear message, and runs
# compose.yaml with docker-compose (v1). Everything it created is removed and a daemon it started
# is stopped, whatever happens.
#
# Exit status: 0 passed; 1 a check failed (build, health, any check); 3 no Docker engine could be
# started at all (reported with dockerd's own error, not a test failure).
#
#   bash tests/docker_smoke.sh         (bash scripts/dev docker-test; also the end of dev test)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TAG="barlowd-smoke:$$"
BASE="debian:12-slim"
WORK=$(mktemp -d /tmp/barlowd-docker.XXXXXX)
NAME="barlowd-smoke-$$"
VOL="barlowd-smoke-$$"
PROJECT="barlowdsmoke$$"
STARTED_DOCKERD=""
MADE_BASE=""
T0=$SECONDS

say() { echo "docker-smoke [$((SECONDS - T0))s]: $*"; }
fail() {
    echo "docker-smoke: FAILED: $*" >&2
    if docker inspect "$NAME" >/dev/null 2>&1; then
        echo "--- last lines of the container's log:" >&2
        docker logs --tail 30 "$NAME" 2>&1 | sed 's/^/    /' >&2
    fi
    exit 1
}

cleanup() {
    set +e
    docker rm -f "$NAME" "$NAME-root" >/dev/null 2>&1
    if [ -f "$WORK/compose.env" ]; then
        (cd "$ROOT" && env $(cat "$WORK/compose.env") docker-compose -p "$PROJECT" down -v \
            >/dev/null 2>&1)
    fi
    docker volume rm -f "$VOL" >/dev/null 2>&1
    docker rmi -f "$TAG" >/dev/null 2>&1
    # the build stage's image (the classic builder keeps it, untagged) and any other it made
    if [ -f "$WORK/images.before" ]; then
        docker images -aq --no-trunc | sort -u | comm -13 "$WORK/images.before" - |
            xargs -r docker rmi -f >/dev/null 2>&1
    fi
    [ -n "$MADE_BASE" ] && docker rmi -f "$BASE" >/dev/null 2>&1
    say "left: $(docker images -aq | wc -l) images, $(docker ps -aq | wc -l) containers, $(docker volume ls -q | wc -l) volumes"
    if [ -n "$STARTED_DOCKERD" ]; then
        docker builder prune -f >/dev/null 2>&1 # an engine of its own: all its build cache is ours
        kill "$STARTED_DOCKERD" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 0.1; done
        say "stopped the dockerd it started (pid $STARTED_DOCKERD)"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "docker-smoke: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

# ---- the engine and the base image (scripts/docker_lib.sh) ----
. "$ROOT/scripts/docker_lib.sh"
rc=0
docker_engine_up "$WORK" || rc=$?
[ "$rc" = 0 ] || exit "$rc"
docker_base_image "$BASE" "$WORK"

# ---- build ----
docker images -aq --no-trunc | sort -u >"$WORK/images.before"
say "docker build"
b0=$SECONDS
docker build -q -t "$TAG" "$ROOT" >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; fail "docker build"; }
say "built $TAG in $((SECONDS - b0)) s ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"

# ---- helpers ----
port_of() { docker port "$1" "$2" | head -1 | sed 's/.*://'; }
http() { curl -sS --max-time 20 "$@"; }
wait_healthy() { # container, seconds
    local s
    for _ in $(seq $(($2 * 5))); do
        s=$(docker inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null || echo gone)
        [ "$s" = healthy ] && return 0
        [ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ] || fail "$1 exited"
        sleep 0.2
    done
    fail "$1 not healthy within $2 s (health: $s)"
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
make_pgms() { # dir, n: n 28x28 grey images 1.pgm..n.pgm, pixels from a seeded generator
    python3 - "$1" "$2" <<'EOF'
import random, sys
for i in range(1, int(sys.argv[2]) + 1):
    r = random.Random(i)
    with open("%s/%d.pgm" % (sys.argv[1], i), "wb") as f:
        f.write(b"P5\n28 28\n255\n" + bytes(r.randrange(256) for _ in range(784)))
EOF
}

# ---- run as a user would: a volume, another port given after the image name ----
docker volume create "$VOL" >/dev/null
run_server() {
    docker run -d --name "$NAME" -p 127.0.0.1::9000 -v "$VOL:/data" \
        --health-interval 1s --health-start-period 30s --health-retries 3 \
        -e BARLOWD_MIN_IMAGES=24 -e BARLOWD_BATCH=24 -e BARLOWD_PUBLISH_EVERY=4 \
        "$TAG" --listen 0.0.0.0:9000 >/dev/null || fail "docker run"
}
run_server
wait_healthy "$NAME" 60
PORT=$(port_of "$NAME" 9000/tcp)
URL="http://127.0.0.1:$PORT"
say "healthy on --listen 0.0.0.0:9000 (published at $URL)"
uid=$(docker exec "$NAME" sh -c 'grep ^Uid: /proc/1/status' | awk '{print $2}')
[ "$uid" = 10001 ] || fail "the server runs as uid $uid, not 10001"
say "the server (PID 1) runs as uid $uid"

mkdir -p "$WORK/img"
make_pgms "$WORK/img" 40
ids=()
for i in $(seq 1 40); do
    r=$(http -w '\n%{http_code}' -X POST -H 'Content-Type: image/x-portable-graymap' \
        --data-binary @"$WORK/img/$i.pgm" "$URL/train")
    [ "$(tail -1 <<<"$r")" = 201 ] || fail "upload $i: $r"
    id=$(head -1 <<<"$r" | grep -oE '"ids": *\[[0-9]+' | grep -oE '[0-9]+$') || fail "upload $i: $r"
    ids+=("$id")
done
say "uploaded 40 images (ids ${ids[0]}..${ids[39]})"
for _ in $(seq 100); do
    code=$(http -o "$WORK/embed.json" -w '%{http_code}' "$URL/embed/${ids[0]}")
    [ "$code" = 200 ] && break
    sleep 0.2
done
[ "$code" = 200 ] || fail "GET /embed/${ids[0]}: $code"
dim=$(json 'len(d["vector"])' <"$WORK/embed.json")
say "GET /embed/${ids[0]}: a $dim-float vector"
for _ in $(seq 100); do
    code=$(http -o "$WORK/nb.json" -w '%{http_code}' "$URL/neighbors/${ids[0]}?k=5")
    [ "$code" = 200 ] && [ "$(json 'len(d["results"])' <"$WORK/nb.json")" = 5 ] && break
    sleep 0.2
done
[ "$code" = 200 ] || fail "GET /neighbors/${ids[0]}: $code $(cat "$WORK/nb.json")"
say "GET /neighbors/${ids[0]}?k=5: $(json '[r["id"] for r in d["results"]]' <"$WORK/nb.json")"
# the dashboard is in the image's binary: its page, its script and a thumbnail
http -D "$WORK/page.h" -o "$WORK/page.html" "$URL/" || fail "GET /: no answer"
grep -qi "^content-security-policy: default-src 'self'" "$WORK/page.h" || fail "GET /: no CSP header"
grep -q '<script src="/ui/app.js"' "$WORK/page.html" || fail "GET /: not the dashboard"
code=$(http -o "$WORK/app.js" -w '%{http_code}' "$URL/ui/app.js")
[ "$code" = 200 ] || fail "GET /ui/app.js: $code"
code=$(http -o "$WORK/thumb.png" -w '%{http_code}' "$URL/images/${ids[0]}/thumbnail?size=16")
[ "$code" = 200 ] && head -c 8 "$WORK/thumb.png" | od -An -tx1 | grep -q '89 50 4e 47' ||
    fail "GET /images/${ids[0]}/thumbnail: $code, not a PNG"
say "GET /, /ui/app.js and a thumbnail: the dashboard is served"

# ---- docker stop while it trains ----
for _ in $(seq 300); do
    http "$URL/status" >"$WORK/status.json"
    state=$(json 'd["training"]["state"]' <"$WORK/status.json")
    step=$(json 'd["training"]["step"]' <"$WORK/status.json")
    [ "$state" = training ] && [ "$step" -ge 6 ] && break
    sleep 0.2
done
[ "$state" = training ] || fail "training never started (state $state)"
serving=$(json 'd["models"]["serving_version"]' <"$WORK/status.json")
images=$(json 'd["images"]' <"$WORK/status.json")
say "training: step $step, serving version $serving, $images images; docker stop (10 s grace)"
s0=$(date +%s.%N)
docker stop "$NAME" >/dev/null
s1=$(date +%s.%N)
code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
secs=$(python3 -c "print('%.2f' % ($s1 - $s0))")
say "docker stop took $secs s; State.ExitCode $code"
docker logs "$NAME" 2>&1 | grep -E 'SIGTERM|stopped|published model version' | tail -3 | sed 's/^/    /'
[ "$code" = 0 ] || fail "exit code $code after docker stop ($secs s)"
docker logs "$NAME" 2>&1 | grep -q 'barlowd: stopped' || fail "no clean stop in the log"

# ---- restart on the same volume ----
docker rm "$NAME" >/dev/null
run_server
wait_healthy "$NAME" 60
PORT=$(port_of "$NAME" 9000/tcp)
URL="http://127.0.0.1:$PORT"
http "$URL/status" >"$WORK/status2.json"
images2=$(json 'd["images"]' <"$WORK/status2.json")
serving2=$(json 'd["models"]["serving_version"]' <"$WORK/status2.json")
step2=$(json 'd["training"]["step"]' <"$WORK/status2.json")
[ "$images2" = "$images" ] || fail "$images images before the stop, $images2 after"
[ "$serving2" -ge "$serving" ] || fail "serving version $serving2 after the restart, $serving before"
for i in $(seq 1 40); do
    http -o "$WORK/back.pgm" "$URL/images/${ids[$((i - 1))]}/raw"
    cmp -s "$WORK/back.pgm" "$WORK/img/$i.pgm" || fail "image ${ids[$((i - 1))]} changed or is gone"
done
say "restarted on the volume: $images2 images (all 40 byte for byte), serving version $serving2 (was $serving), resumed at step $step2"
docker rm -f "$NAME" >/dev/null

# ---- a bind mount the container's user cannot write ----
mkdir -p "$WORK/rootdir" && chmod 755 "$WORK/rootdir"
rc=0
docker run --name "$NAME-root" -v "$WORK/rootdir:/data" "$TAG" >"$WORK/root.log" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "a root-owned bind mount: exit $rc, want 1"
grep -q 'not writable by uid 10001' "$WORK/root.log" || fail "a root-owned bind mount said: $(cat "$WORK/root.log")"
say "a root-owned bind mount: exit 1, \"$(grep -o 'error: [^.]*' "$WORK/root.log" | head -1)\""
docker rm -f "$NAME-root" >/dev/null

# ---- compose.yaml with docker-compose (v1) ----
cport=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
echo "BARLOWD_IMAGE=$TAG BARLOWD_BIND=127.0.0.1 BARLOWD_PORT=$cport BARLOWD_MIN_IMAGES=24 BARLOWD_BATCH=24 BARLOWD_HEALTH_INTERVAL=1s" >"$WORK/compose.env"
compose() { (cd "$ROOT" && env $(cat "$WORK/compose.env") docker-compose -p "$PROJECT" "$@"); }
compose up -d --no-build >"$WORK/compose.log" 2>&1 || { cat "$WORK/compose.log" >&2; fail "docker-compose up"; }
cid=$(compose ps -q barlowd)
[ -n "$cid" ] || fail "docker-compose started no container"
wait_healthy "$cid" 60
for i in $(seq 1 30); do
    code=$(http -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: image/x-portable-graymap' \
        --data-binary @"$WORK/img/$i.pgm" "http://127.0.0.1:$cport/train")
    [ "$code" = 201 ] || fail "compose: upload $i: $code"
done
for _ in $(seq 300); do
    state=$(http "http://127.0.0.1:$cport/status" | json 'd["training"]["state"]')
    [ "$state" = training ] && break
    sleep 0.2
done
[ "$state" = training ] || fail "compose: training never started"
s0=$(date +%s.%N)
compose stop >/dev/null 2>&1
s1=$(date +%s.%N)
code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
say "compose: healthy on 127.0.0.1:$cport, 30 uploads, training; docker-compose stop took $(python3 -c "print('%.2f' % ($s1 - $s0))") s, exit code $code"
[ "$code" = 0 ] || fail "compose: exit code $code after docker-compose stop"
compose down -v >/dev/null 2>&1 || fail "docker-compose down"
rm -f "$WORK/compose.env"
say "passed in $((SECONDS - T0)) s"
