#!/usr/bin/env bash
# shellcheck disable=SC2119 # functions whose arguments are optional
# shellcheck source-path=SCRIPTDIR
# bench/soak.sh: fusou-proxy under mixed traffic for SOAK_MINUTES (default 30) while the fake
# FUSOU API misbehaves, watching for anything that grows without bound. Not run in CI.
#
# Traffic (bench/loadgen, all through fusou-proxy, paced so the machine is not saturated):
#   distinct assets  5/s (SOAK_DISTINCT_RATE), a new 50 KB /kcs2/img/d/… path every request:
#                    capture, commit, upload. Kept below what two upload workers manage
#                    against the faulty API (about 10/s), else the outbox grows by design.
#   repeated assets  40/s, the same path: captured, found known, nothing uploaded
#   kcsapi           20/s, POST /kcsapi/…: proxied, never captured
#   aborts           1/s, distinct 4 MB assets whose client closes the connection halfway:
#                    the capture must be dropped and the connection's resources freed
# The API sink answers SOAK_FAIL (0.10) of its requests with 503 + Retry-After, resets
# SOAK_RESET (0.05) of the connections, and delays SOAK_SLOW_FRACTION (0.02) by 2 s, so the
# retry service and the pending store are exercised all along; the session is posted again
# every 5 minutes (each post triggers a retry pass).
#
# Every SOAK_INTERVAL seconds (10) it samples fusou-proxy's RSS (VmRSS), goroutines
# (go_goroutines from /metrics, with the bearer token of <data_dir>/control.token), open
# files (/proc/PID/fd) and the pipeline's counters into bench/out/soak-<stamp>/soak.csv.
# It fails (exit 1) when, for RSS, goroutines or open files, the median of the last quarter
# of the samples is more than 1.5x the median of the second quarter (and above it by more
# than a small absolute slack, so that 20 -> 31 goroutines is not a leak), when a client
# request other than a deliberate abort failed, or when fusou-proxy died.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

MINUTES=${SOAK_MINUTES:-30}
INTERVAL=${SOAK_INTERVAL:-10}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${SOAK_OUT:-$BENCH_DIR/out/soak-$STAMP}

need_pkgs nginx:nginx openssl:openssl curl:curl python3:python3
command -v go >/dev/null || die "go is not on PATH"

mkdir -p "$OUT"
make_work soak
log "soak for $MINUTES min, work dir $WORK, results in $OUT"

build_tools
make_certs
make_assets
start_nginx
start_sink -fail "${SOAK_FAIL:-0.10}" -reset "${SOAK_RESET:-0.05}" -slow 2s -slow-fraction "${SOAK_SLOW_FRACTION:-0.02}"
# Retry passes every 10 s (instead of 60) so that many of them run during the soak.
start_fusou 'interval_seconds = 10'

dur="${MINUTES}m"
lg() { # lg NAME LOADGEN_FLAGS...: one traffic generator, its JSON result in $OUT/NAME.json
  local name=$1
  shift
  "$WORK/bin/loadgen" -proxy "127.0.0.1:$FUSOU_PORT" -ca "$FUSOU_CA" -d "$dur" "$@" \
    >"$OUT/$name.json" 2>"$OUT/$name.err" &
  GEN_PIDS+=($!)
  PIDS+=($!)
}
GEN_PIDS=()
base="https://$GAME_HOST"
lg distinct -c 4 -rate "${SOAK_DISTINCT_RATE:-5}" -size "$ASSET_SIZE" -url "$base/kcs2/img/d/soak-$STAMP/{n}.png"
lg repeated -c 4 -rate 40 -size "$ASSET_SIZE" -url "$base/kcs2/img/same/asset.png"
lg kcsapi -c 2 -rate 20 -method POST -body 'api_verno=1&api_token=bench' -url "$base/kcsapi/api_port/port"
lg aborts -c 2 -rate 1 -abort -url "$base/kcs2/img/dbig/soak-abort-$STAMP/{n}.png"

CSV=$OUT/soak.csv
echo "t_s,rss_kb,goroutines,open_fds,pending_entries,pending_bytes,captured,committed,known,shed,uploaded,transient,proxied" >"$CSV"
t_start=$SECONDS
end=$((SECONDS + MINUTES * 60))
next_session=$((SECONDS + 300))
while ((SECONDS < end)); do
  kill -0 "$FUSOU_PID" 2>/dev/null || die "fusou-proxy died; see $WORK/fusou-proxy.log"
  m=$(fusou_metrics)
  printf '%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d\n' $((SECONDS - t_start)) \
    "$(status_kb "$FUSOU_PID" VmRSS)" "$(metric go_goroutines <<<"$m")" \
    "$(find "/proc/$FUSOU_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" \
    "$(metric fusou_pending_entries <<<"$m")" "$(metric fusou_pending_bytes <<<"$m")" \
    "$(metric fusou_captures_total <<<"$m")" "$(metric fusou_captures_committed_total <<<"$m")" \
    "$(metric fusou_captures_known_total <<<"$m")" "$(metric fusou_captures_shed_total <<<"$m")" \
    "$(metric fusou_uploads_total 'outcome="success"' <<<"$m")" \
    "$(metric fusou_uploads_total 'outcome="transient"' <<<"$m")" \
    "$(metric fusou_proxy_requests_total <<<"$m")" >>"$CSV"
  if ((SECONDS >= next_session)); then
    curl -sf "$SINK_URL/session" | fusou session set >/dev/null ||
      log "session set failed"
    next_session=$((SECONDS + 300))
  fi
  sleep "$INTERVAL"
done
for pid in "${GEN_PIDS[@]}"; do wait "$pid" || log "a traffic generator failed (pid $pid)"; done
kill -0 "$FUSOU_PID" 2>/dev/null || die "fusou-proxy died; see $WORK/fusou-proxy.log"
curl -sf "$SINK_URL/stats" >"$OUT/apisink-stats.json" || true

python3 - "$OUT" <<'EOF'
import csv, json, statistics, sys

out = sys.argv[1]
rows = [{k: int(v) for k, v in r.items()} for r in csv.DictReader(open(f"{out}/soak.csv"))]
fail = []
lines = [f"samples: {len(rows)} over {rows[-1]['t_s'] if rows else 0} s"]
if len(rows) < 8:
    fail.append("fewer than 8 samples: run longer (SOAK_MINUTES)")
else:
    q = len(rows) // 4
    for col, slack, unit in (("rss_kb", 16384, "kB"), ("goroutines", 25, ""), ("open_fds", 25, "")):
        second = statistics.median(r[col] for r in rows[q:2 * q])
        last = statistics.median(r[col] for r in rows[-q:])
        peak = max(r[col] for r in rows)
        bad = last > 1.5 * second and last - second > slack
        lines.append(f"{col}: second-quarter median {second:g}{unit}, last-quarter median {last:g}{unit}, "
                     f"ratio {last / second if second else 0:.2f}, peak {peak:g}{unit}: {'GROWING' if bad else 'ok'}")
        if bad:
            fail.append(f"{col} grows: {second:g} -> {last:g}")
    for col in ("pending_entries", "pending_bytes"):
        lines.append(f"{col}: second-quarter median {statistics.median(r[col] for r in rows[q:2 * q]):g}, "
                     f"last-quarter median {statistics.median(r[col] for r in rows[-q:]):g}, "
                     f"peak {max(r[col] for r in rows):g} (reported, not judged: it follows the injected faults)")
    last = rows[-1]
    lines.append("pipeline at the end: " + ", ".join(
        f"{k} {last[k]:,}" for k in ("proxied", "captured", "committed", "known", "shed", "uploaded", "transient")))
for name in ("distinct", "repeated", "kcsapi", "aborts"):
    try:
        r = json.load(open(f"{out}/{name}.json"))
    except (OSError, ValueError):
        fail.append(f"traffic generator {name} left no result")
        continue
    lines.append(f"{name}: {r['requests']:,} requests, {r['errors']} errors, {r['aborted']:,} aborted on purpose, "
                 f"{r['rps']:.1f} req/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
                 + (f", first error: {r['first_error']}" if r.get("first_error") else ""))
    if r["errors"] > 0.001 * max(r["requests"], 1):
        fail.append(f"{name}: {r['errors']} client errors")
lines.append("RESULT: " + ("FAIL: " + "; ".join(fail) if fail else "PASS"))
open(f"{out}/summary.txt", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if fail else 0)
EOF
