#!/usr/bin/env bash
# shellcheck disable=SC2119 # functions whose arguments are optional
# shellcheck source-path=SCRIPTDIR
# bench/ab.sh: two fusou-proxy builds side by side with plain goproxy MITM, to tell whether a
# change helps. Build A is a git revision (BENCH_A_REV, default HEAD), build B the work tree.
#
# Stands up the same nginx, fake FUSOU API and goproxy as bench/run.sh, one fusou-proxy per
# build (each with its own data folder and session), and runs bench/loadgen against the three
# in turn, the order rotating each round, many short rounds rather than a few long ones. After
# each fusou-proxy run it waits until that build has committed and uploaded what it captured,
# so that its deferred work does not land in the next run.
#
# Prints one line per run (requests/s, p99, the proxy's CPU per request in the run's window)
# and then, per build, the per-round ratios to goproxy and their median. Nothing is written to
# the docs.
#
# Knobs (environment): BENCH_A_REV (HEAD), BENCH_CASE (distinct: a new asset every request;
# same: one asset repeated), BENCH_ROUNDS (6), BENCH_DURATION (5s), BENCH_CONNS (16).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

A_REV=${BENCH_A_REV:-HEAD}
CASE=${BENCH_CASE:-distinct}
ROUNDS=${BENCH_ROUNDS:-6}
DURATION=${BENCH_DURATION:-5s}
CONNS=${BENCH_CONNS:-16}
CLK_TCK=$(getconf CLK_TCK)

stage_two_builds ab "$A_REV"

# Build A: the same configuration on its own ports and data folder.
start_fusou_copy a "$WORK/bin-a/fusou-proxy"
A_PORT=$COPY_PORT A_CTL=$COPY_CTL A_PID=$COPY_PID

start_goproxy

# variant V prints "PID PORT CA BINARY CONFIG DATA CONTROL" (the last four "-" for goproxy).
variant() {
  case $1 in
  goproxy) echo "$GP_PID $GP_PORT $WORK/goproxy-ca.pem - - - -" ;;
  A) echo "$A_PID $A_PORT $WORK/a-ca.pem $WORK/bin-a/fusou-proxy $WORK/a.toml $WORK/a-data $A_CTL" ;;
  B) echo "$FUSOU_PID $FUSOU_PORT $FUSOU_CA $WORK/bin/fusou-proxy $WORK/fusou.toml $WORK/fusou-data $FUSOU_CTL" ;;
  esac
}


url() {
  if [ "$CASE" = same ]; then echo "https://$GAME_HOST/kcs2/img/same/asset.png"; else echo "https://$GAME_HOST/kcs2/img/d/$1/{n}.png"; fi
}

for v in goproxy A B; do # warm each proxy: leaf, connection pools
  read -r _ port ca _ <<<"$(variant "$v")"
  "$WORK/bin/loadgen" -proxy "127.0.0.1:$port" -ca "$ca" -c 64 -n 2000 -url "https://$GAME_HOST/kcs2/img/same/asset.png" >/dev/null
done

RESULTS=$WORK/ab.txt
vs=(goproxy A B)
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < 3; i++)); do
    v=${vs[(i + r) % 3]}
    read -r pid port ca bin conf data ctl <<<"$(variant "$v")"
    c0=$(cpu_ticks "$pid")
    "$WORK/bin/loadgen" -proxy "127.0.0.1:$port" -ca "$ca" -c "$CONNS" -d "$DURATION" -size "$ASSET_SIZE" \
      -url "$(url "r$r-$v-$RANDOM")" >"$WORK/loadgen.out"
    c1=$(cpu_ticks "$pid")
    line=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
print("round %s %s rps=%.0f p99_ms=%.2f cpu_us_per_req=%.0f" % (sys.argv[2], sys.argv[3], r["rps"], r["p99_ms"],
      (int(sys.argv[4]) / int(sys.argv[5]) * 1e6) / max(r["requests"], 1)))' "$WORK/loadgen.out" "$r" "$v" "$((c1 - c0))" "$CLK_TCK")
    echo "$line" | tee -a "$RESULTS"
    [ "$bin" != - ] && settle_copy "$bin" "$conf" "$data" "$ctl"
  done
done

python3 - "$RESULTS" <<'EOF'
import collections, re, statistics, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    m = re.match(r"round (\d+) (\S+) rps=(\d+) p99_ms=(\S+) cpu_us_per_req=(\d+)", line)
    if m:
        runs[int(m[1])][m[2]] = (int(m[3]), float(m[4]), int(m[5]))
for v in ("A", "B"):
    rate = [runs[r][v][0] / runs[r]["goproxy"][0] for r in sorted(runs)]
    p99 = [runs[r][v][1] / runs[r]["goproxy"][1] for r in sorted(runs)]
    cpu = [runs[r][v][2] for r in sorted(runs)]
    print("%s / goproxy req/s: %s, median %.2f; p99 median %.2f; CPU us/req median %.0f" % (
        v, " ".join("%.2f" % x for x in rate), statistics.median(rate), statistics.median(p99), statistics.median(cpu)))
print("goproxy CPU us/req median %.0f" % statistics.median(runs[r]["goproxy"][2] for r in runs))
EOF
