#!/usr/bin/env bash
# shellcheck disable=SC2119 # functions whose arguments are optional
# shellcheck source-path=SCRIPTDIR
# bench/run.sh: fusou-proxy against its peers, side by side in one run (GitHub issue 7).
#
# Stands up nginx on 127.0.0.1 serving 50 KB incompressible assets over TLS for
# w01y.kancolle-server.com, then measures, round after round with the order of the variants
# rotated each round:
#
#   direct    client -> nginx (no proxy)
#   goproxy   client -> plain goproxy v1.9.3 MITM (bench/goproxy-plain), no capture
#   fusou     client -> fusou-proxy, capturing to its pending store and uploading every new
#             asset to a fake FUSOU API on loopback (bench/apisink), session set
#   fusou-nocapture  the same fusou-proxy build with app.asset_sync.enable = false: the
#             proxy's own cost, to tell it from the capture's
#   mitmproxy client -> mitmdump (Debian's mitmproxy), verifying nginx with its CA
#
# Cases: the same asset every request (hey), a distinct asset every request (bench/loadgen:
# hey cannot vary the URL), and the same asset with loadgen as a cross-check of hey; each at
# 1, 16 and 64 keep-alive HTTP/1.1 connections (the cross-check at 16 only).
#
# Per run: requests/s, p50/p99 latency, the proxy's CPU time (from /proc/PID/stat, including
# for fusou-proxy the commits and uploads it finishes after the run) and its peak RSS
# (VmHWM, reset before each run). Results go to bench/out/<stamp>/results.csv; with
# BENCH_DOC=FILE the tables between the markers of FILE are rewritten too (bench/report.py).
#
# Knobs (environment): BENCH_ROUNDS (3), BENCH_DURATION (10s), BENCH_CONNS ("1 16 64"),
# BENCH_CASES ("same distinct same-loadgen"),
# BENCH_VARIANTS ("direct goproxy fusou fusou-nocapture mitmproxy"),
# BENCH_FUSOU_REV (build fusou-proxy from this git revision, not the work tree), BENCH_KEEP
# (keep the /tmp work dir), BENCH_MAX_LOAD (1.5) and BENCH_LOAD_WAIT_MIN (40): before measuring, wait until the
# 1-minute load average is below BENCH_MAX_LOAD, at most BENCH_LOAD_WAIT_MIN minutes
# (0: don't wait). Everything binds 127.0.0.1 and contacts nothing else.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNS:-1 16 64}
CASES=${BENCH_CASES:-same distinct same-loadgen}
VARIANTS=${BENCH_VARIANTS:-direct goproxy fusou fusou-nocapture mitmproxy}
MAX_LOAD=${BENCH_MAX_LOAD:-1.5}
LOAD_WAIT_MIN=${BENCH_LOAD_WAIT_MIN:-40}
DOC=${BENCH_DOC-}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${BENCH_OUT:-$BENCH_DIR/out/$STAMP}
CLK_TCK=$(getconf CLK_TCK)

need_pkgs nginx:nginx hey:hey mitmdump:mitmproxy openssl:openssl curl:curl python3:python3
command -v go >/dev/null || die "go is not on PATH"

mkdir -p "$OUT"
make_work bench
log "work dir $WORK, results in $OUT"

build_tools
make_certs
make_assets
start_nginx
start_sink
start_fusou

start_goproxy

# fusou-proxy with capture off (app.asset_sync.enable = false): its proxy alone, on the same
# configuration otherwise, to split fusou-proxy's cost between proxying and capturing.
start_fusou_copy nocapture "$WORK/bin/fusou-proxy" FUSOU_APP_ASSET_SYNC_ENABLE=false
NC_PORT=$COPY_PORT NC_PID=$COPY_PID

MITM_PORT=$(free_port)
mkdir -p "$WORK/mitm-conf"
export BENCH_CONNECT_TO="$GAME_HOST:443:127.0.0.1:$NGINX_PORT"
start mitmdump mitmdump -q --listen-host 127.0.0.1 --listen-port "$MITM_PORT" \
  --set confdir="$WORK/mitm-conf" --set ssl_verify_upstream_trusted_ca="$WORK/nginx-ca.pem" \
  -s "$BENCH_DIR/mitm_connect_to.py"
MITM_PID=$LAST_PID
wait_port "$MITM_PORT" 60
MITM_CA="$WORK/mitm-conf/mitmproxy-ca-cert.pem"

# proxy_of VARIANT prints "PID PORT CA" of the proxy ("- - nginx-ca" for direct).
proxy_of() {
  case $1 in
  direct) echo "- - $WORK/nginx-ca.pem" ;;
  goproxy) echo "$GP_PID $GP_PORT $WORK/goproxy-ca.pem" ;;
  fusou) echo "$FUSOU_PID $FUSOU_PORT $FUSOU_CA" ;;
  fusou-nocapture) echo "$NC_PID $NC_PORT $WORK/nocapture-ca.pem" ;;
  mitmproxy) echo "$MITM_PID $MITM_PORT $MITM_CA" ;;
  esac
}

# Check that every path works through every variant before measuring anything.
for v in $VARIANTS; do
  read -r _ port ca <<<"$(proxy_of "$v")"
  for path in /kcs2/img/same/asset.png /kcs2/img/d/check/00000042.png; do
    if [ "$v" = direct ]; then
      args=(--connect-to "$GAME_HOST:443:127.0.0.1:$NGINX_PORT")
    else
      args=(--proxy "http://127.0.0.1:$port")
    fi
    size=$(curl -sf --cacert "$ca" "${args[@]}" -o /dev/null -w '%{size_download}' "https://$GAME_HOST$path") ||
      die "$v: GET $path failed"
    [ "$size" = "$ASSET_SIZE" ] || die "$v: GET $path: $size bytes"
  done
done
log "all variants serve both paths"

# run_hey VARIANT CONNS prints "rps p50_ms p99_ms requests errors" for the repeated asset.
# hey cannot pin an address, so direct asks https://127.0.0.1:PORT with -host (hey sends
# the Host header's name as SNI too): the same TLS and request as through a proxy, no
# resolver involved. hey never verifies certificates (InsecureSkipVerify in hey 0.1.4), so
# no CA is passed; that affects only the handshake, once per connection.
run_hey() {
  local v=$1 c=$2 port out
  read -r _ port _ <<<"$(proxy_of "$v")"
  out=$WORK/hey.out
  if [ "$v" = direct ]; then
    hey -z "$DURATION" -c "$c" -host "$GAME_HOST" "https://127.0.0.1:$NGINX_PORT/kcs2/img/same/asset.png" >"$out"
  else
    hey -z "$DURATION" -c "$c" -x "http://127.0.0.1:$port" "https://$GAME_HOST/kcs2/img/same/asset.png" >"$out"
  fi
  awk '
    /Requests\/sec:/ { rps = $2 }
    /^ *50% in/ { p50 = $3 * 1000 }
    /^ *99% in/ { p99 = $3 * 1000 }
    /^ *\[200\]/ { ok += $2 }
    /^Error distribution/ { inerr = 1; next }
    inerr && /^ *\[[0-9]+\]/ { gsub(/[\[\]]/, "", $1); errs += $1 }
    END { printf "%.1f %.2f %.2f %d %d\n", rps, p50, p99, ok, errs }' "$out"
}

# run_loadgen VARIANT CONNS URL_PATH prints "rps p50_ms p99_ms requests errors".
run_loadgen() {
  local v=$1 c=$2 path=$3 port ca args
  read -r _ port ca <<<"$(proxy_of "$v")"
  if [ "$v" = direct ]; then
    args=(-connect "127.0.0.1:$NGINX_PORT")
  else
    args=(-proxy "127.0.0.1:$port")
  fi
  "$WORK/bin/loadgen" "${args[@]}" -ca "$ca" -c "$c" -d "$DURATION" -size "$ASSET_SIZE" \
    -url "https://$GAME_HOST$path" >"$WORK/loadgen.out"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
print("%.1f %.3f %.3f %d %d" % (r["rps"], r["p50_ms"], r["p99_ms"], r["requests"], r["errors"]))
if r.get("first_error"): print("loadgen: first error: " + r["first_error"], file=sys.stderr)' "$WORK/loadgen.out"
}

# settle_fusou waits until fusou-proxy has committed every capture and uploaded every
# pending entry (a forced retry pass for what the live workers left behind), so that its
# deferred work is counted against its own run and does not spill into the next one.
settle_fusou() {
  local m prev='' i
  for ((i = 0; i < 600; i++)); do # commit queue drained, or stuck for 2 s
    m=$(fusou_metrics 'fusou_captures|fusou_pending_entries')
    local cap com kno shed
    cap=$(metric fusou_captures_total <<<"$m")
    com=$(metric fusou_captures_committed_total <<<"$m")
    kno=$(metric fusou_captures_known_total <<<"$m")
    shed=$(metric fusou_captures_shed_total <<<"$m")
    ((com + kno + shed >= cap)) && break
    [ "$m" = "$prev" ] && ((i % 20 == 19)) && break
    prev=$m
    sleep 0.1
  done
  if (($(fusou_metrics fusou_pending_entries | metric fusou_pending_entries) > 0)); then
    timeout 600 "$WORK/bin/fusou-proxy" --config "$WORK/fusou.toml" retry --wait >/dev/null 2>&1 ||
      log "fusou-proxy retry --wait did not finish cleanly"
  fi
}

RESULTS=$OUT/results.csv
echo "round,case,tool,conns,variant,rps,p50_ms,p99_ms,requests,errors,proxy_cpu_s,settle_s,settle_cpu_s,proxy_hwm_kb,nginx_cpu_s,load1,captured,committed,known,shed,uploaded" >"$RESULTS"

# measure ROUND CASE CONNS VARIANT runs one measurement and appends it to results.csv.
measure() {
  local round=$1 case=$2 c=$3 v=$4 pid tool res cpu0 cpu1 ncpu0 ncpu1 t0 settle=0 scpu=0 hwm=0 l m0 m1
  read -r pid _ _ <<<"$(proxy_of "$v")"
  local npids
  npids=$(nginx_pids)
  [ "$pid" != - ] && reset_hwm "$pid"
  [ "$v" = fusou ] && m0=$(fusou_metrics 'fusou_captures|fusou_uploads')
  l=$(load1)
  cpu0=$([ "$pid" != - ] && cpu_ticks "$pid" || echo 0)
  # shellcheck disable=SC2086 # a list of PIDs
  ncpu0=$(cpu_ticks $npids)
  case $case in
  same) tool=hey res=$(run_hey "$v" "$c") ;;
  same-loadgen) tool=loadgen res=$(run_loadgen "$v" "$c" /kcs2/img/same/asset.png) ;;
  distinct) tool=loadgen res=$(run_loadgen "$v" "$c" "/kcs2/img/d/r$round-$v-c$c-$STAMP/{n}.png") ;;
  esac
  cpu1=$([ "$pid" != - ] && cpu_ticks "$pid" || echo 0)
  # shellcheck disable=SC2086 # a list of PIDs
  ncpu1=$(cpu_ticks $npids)
  [ "$pid" != - ] && hwm=$(status_kb "$pid" VmHWM)
  local cap=0 com=0 kno=0 shed=0 upl=0
  if [ "$v" = fusou ]; then
    t0=$(date +%s.%N)
    settle_fusou
    settle=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    scpu=$(($(cpu_ticks "$pid") - cpu1))
    hwm=$(status_kb "$pid" VmHWM)
    m1=$(fusou_metrics 'fusou_captures|fusou_uploads')
    cap=$(($(metric fusou_captures_total <<<"$m1") - $(metric fusou_captures_total <<<"$m0")))
    com=$(($(metric fusou_captures_committed_total <<<"$m1") - $(metric fusou_captures_committed_total <<<"$m0")))
    kno=$(($(metric fusou_captures_known_total <<<"$m1") - $(metric fusou_captures_known_total <<<"$m0")))
    shed=$(($(metric fusou_captures_shed_total <<<"$m1") - $(metric fusou_captures_shed_total <<<"$m0")))
    upl=$(($(metric fusou_uploads_total 'outcome="success"' <<<"$m1") - $(metric fusou_uploads_total 'outcome="success"' <<<"$m0")))
  fi
  read -r rps p50 p99 n errs <<<"$res"
  ((${n%.*} > 0)) || die "round $round $case c=$c $v: no successful request ($res)"
  printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' \
    "$round" "$case" "$tool" "$c" "$v" "$rps" "$p50" "$p99" "$n" "$errs" \
    "$(awk -v t=$((cpu1 - cpu0)) -v k="$CLK_TCK" 'BEGIN { printf "%.2f", t / k }')" "$settle" \
    "$(awk -v t="$scpu" -v k="$CLK_TCK" 'BEGIN { printf "%.2f", t / k }')" "$hwm" \
    "$(awk -v t=$((ncpu1 - ncpu0)) -v k="$CLK_TCK" 'BEGIN { printf "%.2f", t / k }')" "$l" \
    "$cap" "$com" "$kno" "$shed" "$upl" >>"$RESULTS"
  log "round $round $case c=$c $v: $rps req/s, p50 $p50 ms, p99 $p99 ms, $errs errors$([ "$v" = fusou ] && echo ", settle ${settle}s, captured $cap committed $com known $kno shed $shed uploaded $upl")"
}

# Warm every proxy (leaf generation, connection pools, mitmproxy's imports).
for v in $VARIANTS; do
  read -r _ port ca <<<"$(proxy_of "$v")"
  if [ "$v" = direct ]; then args=(-connect "127.0.0.1:$NGINX_PORT"); else args=(-proxy "127.0.0.1:$port"); fi
  "$WORK/bin/loadgen" "${args[@]}" -ca "$ca" -c 64 -n 2000 -url "https://$GAME_HOST/kcs2/img/same/asset.png" >/dev/null
done

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "$LOAD_WAIT_MIN" -gt 0 ]; then wait_for_quiet "$MAX_LOAD" "$LOAD_WAIT_MIN" || true; fi
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u +'%Y-%m-%d %H:%M UTC')

read -ra vs <<<"$VARIANTS"
for ((r = 1; r <= ROUNDS; r++)); do
  for case in $CASES; do
    for c in $CONNS; do
      [ "$case" = same-loadgen ] && [ "$c" != 16 ] && continue
      for ((i = 0; i < ${#vs[@]}; i++)); do
        measure "$r" "$case" "$c" "${vs[(i + r - 1) % ${#vs[@]}]}"
      done
    done
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# Context for the report.
{
  echo "date=$START"
  echo "command=${BENCH_FUSOU_REV:+BENCH_FUSOU_REV=$BENCH_FUSOU_REV }BENCH_ROUNDS=$ROUNDS BENCH_DURATION=$DURATION make bench"
  echo "nproc=$(nproc)"
  echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)"
  echo "kernel=$(uname -r)"
  echo "go=$(go version | cut -d' ' -f3-)"
  echo "nginx=$(nginx -v 2>&1 | sed 's/.*\///')"
  echo "hey=$(dpkg-query -W -f='${Version}' hey 2>/dev/null)"
  echo "mitmproxy=$(mitmdump --version 2>/dev/null | sed -n 's/^Mitmproxy: *//p')"
  echo "fusou=$FUSOU_BUILT"
  echo "load_before_wait=$LOAD_BEFORE"
  echo "load_start=$LOAD_START"
  echo "load_end=$LOAD_END"
  echo "duration=$DURATION"
  echo "rounds=$ROUNDS"
} >"$OUT/context.txt"

python3 "$BENCH_DIR/report.py" "$OUT" >"$OUT/report.md"
cat "$OUT/report.md"
if [ -n "$DOC" ]; then
  python3 "$BENCH_DIR/report.py" --update "$DOC" "$OUT"
  log "updated $DOC"
fi
