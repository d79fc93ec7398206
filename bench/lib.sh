# shellcheck shell=bash
# shellcheck disable=SC2119,SC2120 # start_sink and start_fusou take optional arguments
# Shared parts of bench/run.sh, bench/soak.sh, bench/ab.sh and bench/duel.sh: packages,
# certificates, the nginx "game server", the fake FUSOU API, fusou-proxy and per-process
# measurements. Sourced, not run.
# Everything listens on 127.0.0.1 and talks only to 127.0.0.1.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
GAME_HOST=w01y.kancolle-server.com
ASSET_SIZE=51200     # 50 KB, incompressible
BASE_ASSETS=100      # distinct bodies behind /kcs2/img/d/<run>/<n>.png (n mod 100)
PIDS=()              # processes this script started, stopped by cleanup
shopt -s inherit_errexit

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

PATH=$PATH:/usr/sbin:/sbin # nginx, for a user whose PATH lacks them

# need_pkgs COMMAND:PACKAGE... installs the Debian packages whose command is missing
# (apt-get update first, since a fresh machine's package lists may be empty or stale).
need_pkgs() {
  local missing=() pair sudo=''
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  log "installing ${missing[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# free_port prints a TCP port free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT [SECONDS] waits until something listens on 127.0.0.1:PORT.
wait_port() {
  local i
  for ((i = 0; i < ${2:-20} * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on 127.0.0.1:$1"
}

# start NAME CMD... starts CMD in the background, logging to $WORK/NAME.log, and sets
# LAST_PID.
start() {
  local name=$1
  shift
  "$@" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${WORK:-}" ] && [ -f "$WORK/nginx.pid" ]; then
    kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  fi
  if [ -n "${OUT:-}" ] && [ -n "${WORK:-}" ]; then
    cp "$WORK"/*.log "$OUT"/ 2>/dev/null || true
  fi
  if [ -n "${WORK:-}" ] && [ -z "${BENCH_KEEP:-}" ]; then
    rm -rf "$WORK"
    if [ -n "${DISK_IMG:-}" ]; then
      umount "$DISK_MNT" && rm -f "$DISK_IMG"
    fi
  elif [ -n "${WORK:-}" ]; then
    log "kept $WORK (BENCH_KEEP)"
  fi
}

# make_work NAME makes $WORK, the run's folder (removed on exit unless BENCH_KEEP): under
# BENCH_TMPDIR when set, else on a journaled disk of its own where root can mount one
# (mount_journaled_disk), else under /tmp.
make_work() {
  local base=${BENCH_TMPDIR:-}
  if [ -z "$base" ] && mount_journaled_disk; then
    base=$DISK_MNT
  fi
  WORK=$(mktemp -d "${base:-/tmp}/fusou-$1.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

# mount_journaled_disk mounts a new ext4, with a journal, from a sparse image file
# (DISK_IMG at DISK_MNT, both removed on exit), as root only. The data folders go there
# because a player's disk journals its metadata (NTFS, APFS, ext4 by default) and this VM's
# own ext4 does not: without a journal, ext4 passes over every inode freed in the last 30 s,
# reading its block, each time it makes a file, so that a file made soon after many were
# removed (the uploads of the run before) costs up to 250 µs of CPU where it costs 20.
mount_journaled_disk() {
  [ "$(id -u)" -eq 0 ] || return 1
  DISK_IMG=$(mktemp /var/tmp/fusou-bench-disk.XXXXXX)
  DISK_MNT=$(mktemp -d /tmp/fusou-bench-mnt.XXXXXX)
  if truncate -s 16G "$DISK_IMG" && mkfs.ext4 -q -F "$DISK_IMG" >/dev/null 2>&1 &&
    mount -o loop,discard "$DISK_IMG" "$DISK_MNT" 2>/dev/null; then
    log "data folders on a journaled ext4 of their own ($DISK_IMG at $DISK_MNT)"
    return 0
  fi
  log "could not mount a journaled ext4 (loop devices?): data folders under /tmp"
  rm -f "$DISK_IMG"
  rmdir "$DISK_MNT"
  DISK_IMG='' DISK_MNT=''
  return 1
}

# make_ca DIR NAME: a P-256 CA, DIR/NAME.pem and DIR/NAME-key.pem.
make_ca() {
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 30 \
    -subj "/CN=fusou-proxy bench $2" -addext "basicConstraints=critical,CA:true" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$1/$2-key.pem" -out "$1/$2.pem" 2>/dev/null
}

# make_certs: nginx's CA and leaf for GAME_HOST, and the plain goproxy's MITM CA.
make_certs() {
  make_ca "$WORK" nginx-ca
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj "/CN=$GAME_HOST" \
    -keyout "$WORK/nginx-key.pem" -out "$WORK/nginx.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:false\n' \
    "$GAME_HOST" >"$WORK/leaf.ext"
  openssl x509 -req -in "$WORK/nginx.csr" -CA "$WORK/nginx-ca.pem" -CAkey "$WORK/nginx-ca-key.pem" \
    -CAcreateserial -days 30 -sha256 -extfile "$WORK/leaf.ext" -out "$WORK/nginx.pem" 2>/dev/null
  make_ca "$WORK" goproxy-ca
}

# make_assets: 50 KB random files. /kcs2/img/same/asset.png is the repeated asset; every
# /kcs2/img/d/<run>/<n>.png is rewritten by nginx to base/<last two digits of n>.png, so
# each URL is a distinct asset key (SPEC §4: the key is the path) without 5 GB of files.
# /kcs2/img/dbig/<run>/<n>.png is a distinct 4 MB asset (big/big.png), large enough that a
# client closing mid-body is an abort for the proxy too, not only for the client.
make_assets() {
  local i
  mkdir -p "$WORK/www/kcs2/img/same" "$WORK/www/kcs2/img/base" "$WORK/www/kcs2/img/big"
  head -c "$ASSET_SIZE" /dev/urandom >"$WORK/www/kcs2/img/same/asset.png"
  head -c $((4 << 20)) /dev/urandom >"$WORK/www/kcs2/img/big/big.png"
  for ((i = 0; i < BASE_ASSETS; i++)); do
    head -c "$ASSET_SIZE" /dev/urandom >"$WORK/www/kcs2/img/base/$(printf %02d "$i").png"
  done
  make_game_start_assets "$WORK/www/kcs2/img/gsbase"
  chmod -R a+rX "$WORK/www"
  chmod 755 "$WORK" # nginx workers run as nobody
}

# GAME_START_ASSETS is the size of a game start: the distinct assets a browser fetches when the
# game loads, over GAME_START_CONNS connections (a browser's limit per host).
GAME_START_ASSETS=600
GAME_START_CONNS=6
# GAME_START_LINK_RATE is each connection's rate in the game start over a home link: six at 2 MB/s
# are about 100 Mbit/s.
GAME_START_LINK_RATE=2m

# make_game_start_assets DIR writes the bodies of a game start, 00000001.png and on (a few more
# than GAME_START_ASSETS, for loadgen's warm-up requests), sized like the game's: one in ten
# 1-10 KB, three in four 10-100 KB, the rest 100-500 KB, log-uniform within each band, from a
# fixed seed so every run has the same sizes. /kcs2/img/gs/<run>/<n>.png serves DIR/<n>.png, and
# /kcs2/img/gslink/<run>/<n>.png the same at GAME_START_LINK_RATE a connection.
make_game_start_assets() {
  mkdir -p "$1"
  python3 - "$1" "$((GAME_START_ASSETS + 20))" <<'PY'
import os, random, sys
rng = random.Random(600)
for n in range(1, int(sys.argv[2]) + 1):
    u = rng.random()
    lo, hi = (1e3, 1e4) if u < 0.1 else (1e4, 1e5) if u < 0.85 else (1e5, 5e5)
    size = int(lo * (hi / lo) ** rng.random())
    with open(os.path.join(sys.argv[1], "%08d.png" % n), "wb") as f:
        f.write(os.urandom(size))
PY
}

# start_nginx sets NGINX_PORT. HTTP/1.1 only, keep-alive without a request limit, no
# access log, gzip off (the assets are incompressible anyway).
start_nginx() {
  NGINX_PORT=$(free_port)
  mkdir -p "$WORK/nginx-tmp"
  cat >"$WORK/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  types { image/png png; application/json json; }
  default_type application/octet-stream;
  client_body_temp_path $WORK/nginx-tmp/body;
  proxy_temp_path $WORK/nginx-tmp/proxy;
  fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
  scgi_temp_path $WORK/nginx-tmp/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  sendfile on;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    server_name $GAME_HOST;
    ssl_certificate $WORK/nginx.pem;
    ssl_certificate_key $WORK/nginx-key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    root $WORK/www;
    location /kcs2/img/d/ {
      rewrite "^/kcs2/img/d/[^/]+/[0-9]*([0-9][0-9])\.png\$" /kcs2/img/base/\$1.png last;
      return 404;
    }
    location /kcs2/img/gs/ {
      rewrite "^/kcs2/img/gs/[^/]+/([0-9]+)\.png\$" /kcs2/img/gsbase/\$1.png last;
      return 404;
    }
    location /kcs2/img/gslink/ {
      rewrite "^/kcs2/img/gslink/[^/]+/([0-9]+)\.png\$" /kcs2/img/gsbase/\$1.png break;
      limit_rate $GAME_START_LINK_RATE;
    }
    location /kcs2/img/dbig/ {
      rewrite "^/kcs2/img/dbig/[^/]+/[0-9]+\.png\$" /kcs2/img/big/big.png last;
      return 404;
    }
    location /kcsapi/ {
      default_type application/json;
      return 200 '{"api_result":1,"api_result_msg":"OK","api_data":{}}';
    }
  }
}
EOF
  nginx -t -q -c "$WORK/nginx.conf" -p "$WORK" 2>"$WORK/nginx-t.log" || die "nginx -t: $(cat "$WORK/nginx-t.log")"
  nginx -c "$WORK/nginx.conf" -p "$WORK"
  wait_port "$NGINX_PORT"
  log "nginx on 127.0.0.1:$NGINX_PORT (pid $(cat "$WORK/nginx.pid"))"
}

# nginx_pids prints the nginx master and its workers.
nginx_pids() {
  local m
  m=$(cat "$WORK/nginx.pid")
  echo "$m" $(pgrep -P "$m")
}

# build_tools builds fusou-proxy and the bench programs into $WORK/bin, and sets FUSOU_BUILT
# to what fusou-proxy was built from. BENCH_FUSOU_REV=<git revision> builds fusou-proxy from
# that commit (git archive) instead of the work tree, e.g. while others edit the tree.
build_tools() {
  mkdir -p "$WORK/bin"
  (cd "$REPO" && go build -o "$WORK/bin/" ./bench/goproxy-plain ./bench/loadgen ./bench/apisink)
  if [ -n "${BENCH_FUSOU_REV:-}" ]; then
    mkdir -p "$WORK/src"
    git -C "$REPO" archive "$BENCH_FUSOU_REV" | tar -x -C "$WORK/src"
    (cd "$WORK/src" && go build -o "$WORK/bin/" ./cmd/fusou-proxy)
    FUSOU_BUILT="commit $(git -C "$REPO" rev-parse --short "$BENCH_FUSOU_REV")"
  else
    (cd "$REPO" && go build -o "$WORK/bin/" ./cmd/fusou-proxy)
    FUSOU_BUILT="work tree at $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)"
  fi
  log "fusou-proxy built from the $FUSOU_BUILT"
}

# start_sink [FLAGS...] starts the fake FUSOU API and sets SINK_URL and SINK_PID.
start_sink() {
  local i
  start apisink "$WORK/bin/apisink" "$@"
  SINK_PID=$LAST_PID
  for ((i = 0; i < 100; i++)); do
    SINK_URL=$(head -n1 "$WORK/apisink.log" 2>/dev/null || true)
    [[ $SINK_URL == http://* ]] && break
    sleep 0.1
  done
  [[ $SINK_URL == http://* ]] || die "apisink did not start: $(cat "$WORK/apisink.log")"
  log "fake FUSOU API at $SINK_URL (pid $SINK_PID)"
}

# start_fusou [RETRY_TOML] (keys for [app.asset_sync.retry]) starts fusou-proxy MITMing GAME_HOST, dialling nginx, uploading
# to the sink, with a session set; sets FUSOU_PORT, FUSOU_CTL, FUSOU_PID, FUSOU_CA.
start_fusou() {
  FUSOU_PORT=$(free_port)
  FUSOU_CTL=$(free_port)
  mkdir -p "$WORK/fusou-data"
  cat >"$WORK/fusou.toml" <<EOF
[proxy]
listen = "127.0.0.1:$FUSOU_PORT"
mitm_hosts = ["kancolle-server.com"]
upstream_ca_file = "$WORK/nginx-ca.pem"
connect_to = ["$GAME_HOST:443:127.0.0.1:$NGINX_PORT"]

[app]
data_dir = "$WORK/fusou-data"

[app.asset_sync]
asset_upload_endpoint = "$SINK_URL/api/asset-sync/upload"
asset_existing_keys_endpoint = "$SINK_URL/api/asset-sync/keys"

# A 10 s flood of new 50 KB assets at full speed is over 2 GiB, the default outbox size: with
# it the last seconds' captures would be shed, which flatters the proxy's rate. Room for all.
[app.asset_sync.retry]
max_pending_bytes = 8589934592
${1:-}

[control]
listen = "127.0.0.1:$FUSOU_CTL"
EOF
  fusou() { "$WORK/bin/fusou-proxy" --config "$WORK/fusou.toml" "$@"; }
  start fusou-proxy "$WORK/bin/fusou-proxy" --config "$WORK/fusou.toml" run --log-format json --log-level "${FUSOU_LOG_LEVEL:-warn}"
  FUSOU_PID=$LAST_PID
  wait_port "$FUSOU_CTL"
  wait_port "$FUSOU_PORT"
  FUSOU_CA="$WORK/fusou-ca.pem"
  fusou ca export --out "$FUSOU_CA" >/dev/null
  curl -sf "$SINK_URL/session" | fusou session set >/dev/null
  log "fusou-proxy on 127.0.0.1:$FUSOU_PORT, control 127.0.0.1:$FUSOU_CTL (pid $FUSOU_PID)"
}

# start_fusou_copy NAME BINARY [ENV=VALUE...] starts another fusou-proxy, BINARY, with
# start_fusou's configuration on ports and a data folder of its own ($WORK/NAME.toml,
# $WORK/NAME-data), the environment given, its CA exported to $WORK/NAME-ca.pem and the same
# session posted; sets COPY_PORT, COPY_CTL and COPY_PID.
start_fusou_copy() {
  local name=$1 bin=$2
  shift 2
  COPY_PORT=$(free_port)
  COPY_CTL=$(free_port)
  sed -e "s#127.0.0.1:$FUSOU_PORT\"#127.0.0.1:$COPY_PORT\"#" -e "s#127.0.0.1:$FUSOU_CTL\"#127.0.0.1:$COPY_CTL\"#" \
    -e "s#$WORK/fusou-data#$WORK/$name-data#" "$WORK/fusou.toml" >"$WORK/$name.toml"
  mkdir -p "$WORK/$name-data"
  start "fusou-$name" env "$@" "$bin" --config "$WORK/$name.toml" run --log-format json --log-level warn
  # shellcheck disable=SC2034 # read by the scripts that source this file
  COPY_PID=$LAST_PID
  wait_port "$COPY_CTL"
  wait_port "$COPY_PORT"
  "$bin" --config "$WORK/$name.toml" ca export --out "$WORK/$name-ca.pem" >/dev/null 2>&1
  curl -sf "$SINK_URL/session" | "$bin" --config "$WORK/$name.toml" session set >/dev/null
}

# stage_two_builds NAME REV is how bench/ab.sh and bench/duel.sh begin: it makes $WORK
# (make_work), builds the work tree's fusou-proxy (build B, $WORK/bin) and git revision REV's
# (build A, $WORK/bin-a, from git archive), and starts nginx, the API fake and start_fusou.
stage_two_builds() {
  need_pkgs nginx:nginx openssl:openssl curl:curl python3:python3
  make_work "$1"
  build_tools
  mkdir -p "$WORK/src-a" "$WORK/bin-a"
  git -C "$REPO" archive "$2" | tar -x -C "$WORK/src-a"
  (cd "$WORK/src-a" && go build -o "$WORK/bin-a/" ./cmd/fusou-proxy)
  log "A: fusou-proxy at $(git -C "$REPO" rev-parse --short "$2"); B: $FUSOU_BUILT"
  make_certs
  make_assets
  start_nginx
  start_sink
  start_fusou
}

# settle_copy BINARY CONFIG DATA CONTROL waits until a fusou-proxy started with start_fusou_copy
# (or start_fusou) has committed (or dropped) every capture, then uploads what is pending with a
# forced retry pass.
settle_copy() {
  local i m cap n
  for ((i = 0; i < 1200; i++)); do
    m=$(curl -sf --max-time 10 -H "Authorization: Bearer $(cat "$3/control.token")" "http://127.0.0.1:$4/metrics" |
      grep -E '^fusou_captures_(total|committed_total|known_total|shed_total) ' || true)
    cap=$(metric fusou_captures_total <<<"$m")
    n=$(($(metric fusou_captures_committed_total <<<"$m") + $(metric fusou_captures_known_total <<<"$m") + $(metric fusou_captures_shed_total <<<"$m")))
    ((n >= cap)) && break
    sleep 0.5
  done
  timeout 600 "$1" --config "$2" retry --wait >/dev/null 2>&1 || log "retry --wait did not finish cleanly"
}

# start_goproxy starts bench/goproxy-plain MITMing GAME_HOST with the script's goproxy CA,
# dialling nginx and verifying it; sets GP_PORT and GP_PID.
start_goproxy() {
  GP_PORT=$(free_port)
  start goproxy-plain "$WORK/bin/goproxy-plain" -listen "127.0.0.1:$GP_PORT" \
    -ca-cert "$WORK/goproxy-ca.pem" -ca-key "$WORK/goproxy-ca-key.pem" \
    -upstream-ca "$WORK/nginx-ca.pem" -connect-to "$GAME_HOST:443:127.0.0.1:$NGINX_PORT"
  # shellcheck disable=SC2034 # read by the scripts that source this file
  GP_PID=$LAST_PID
  wait_port "$GP_PORT"
}

# fusou_metrics [REGEX] prints fusou-proxy's Prometheus metrics (the route needs the
# bearer token from <data_dir>/control.token), optionally only the matching lines.
fusou_metrics() {
  curl -sf --max-time 10 -H "Authorization: Bearer $(cat "$WORK/fusou-data/control.token")" \
    "http://127.0.0.1:$FUSOU_CTL/metrics" | grep -v '^#' | grep -E "${1:-.}" || true
}

# metric NAME [LABELS] prints one value from a metrics dump on stdin (0 if absent).
metric() {
  local n=$1
  [ -n "${2:-}" ] && n="$1{$2}"
  awk -v n="$n" '$1 == n { v = $2 } END { printf "%d\n", v + 0 }'
}

# cpu_ticks PID... prints the summed user+system CPU time of the processes, in clock ticks
# (fields 14 and 15 of /proc/PID/stat; the command name may hold spaces, so count from ")").
cpu_ticks() {
  local pid sum=0 t
  for pid in "$@"; do
    t=$(awk '{ sub(/.*\) /, ""); split($0, f, " "); print f[12] + f[13] }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}

# reset_hwm PID... resets the peak RSS (VmHWM) to the current RSS (clear_refs 5).
reset_hwm() {
  local pid
  for pid in "$@"; do echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true; done
}

# status_kb PID FIELD prints a /proc/PID/status field in kB (VmHWM, VmRSS); summed over PIDs
# when PID is a list in quotes.
status_kb() {
  local pid sum=0 v
  for pid in $1; do
    v=$(awk -v f="$2:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

# wait_idle writes back dirty pages (sync), then waits until the machine's CPUs were at least
# 90 % idle over half a second, for at most 30 s: so that the kernel's deferred work of one
# run (writeback, the discards of removed files) does not land in the next.
wait_idle() {
  local i a b
  sync
  for ((i = 0; i < 60; i++)); do
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8, $5 + $6 }' /proc/stat)
    sleep 0.5
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8, $5 + $6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x); split(b, y); t = y[1] - x[1]; exit !(t > 0 && (y[2] - x[2]) / t >= 0.9) }' && return 0
  done
  log "the machine did not go idle within 30 s: running anyway"
}

# load1 prints the 1-minute load average.
load1() { cut -d' ' -f1 /proc/loadavg; }

# wait_for_quiet MAX_LOAD MAX_MINUTES polls the 1-minute load average every 30 s until it is
# below MAX_LOAD, for at most MAX_MINUTES; returns 1 if it never got there.
wait_for_quiet() {
  local deadline=$((SECONDS + $2 * 60)) l
  while :; do
    l=$(load1)
    if awk -v l="$l" -v m="$1" 'BEGIN { exit !(l < m) }'; then
      log "load average $l < $1: go"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      log "load average still $l after $2 min: running anyway"
      return 1
    fi
    log "load average $l >= $1: waiting 30 s"
    sleep 30
  done
}
