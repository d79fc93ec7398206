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
# and before every run until the machine is idle (wait_idle), so that one run's deferred work
# (the proxy's, or the kernel's writeback) does not land in the next.
#
# Prints one line per run (requests/s, p99, the proxy's CPU per request in the run's window)
# and then, per build, the per-round ratios to goproxy and their median. Nothing is written to
# the docs.
#
# Knobs (environment): BENCH_A_REV (HEAD), BENCH_CASE (distinct: a new asset every request;
# same: one asset repeated; gamestart: a game's start, GAME_START_ASSETS distinct assets of the
# game's sizes over GAME_START_CONNS connections, timed to the last byte; gamestart-link: the same
# with each connection served at GAME_START_LINK_RATE, as over a home link), BENCH_ROUNDS (6),
# BENCH_DURATION (5s), BENCH_CONNS (16), BENCH_TMPDIR (where the data folders go; by default a
# journaled ext4 of their own: see make_work in lib.sh).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

A_REV=${BENCH_A_REV:-HEAD}
CASE=${BENCH_CASE:-distinct}
ROUNDS=${BENCH_ROUNDS:-6}
DURATION=${BENCH_DURATION:-5s}
CONNS=${BENCH_CONNS:-16}
# load ROUND_ID: loadgen's flags for the case (the URL names a run of its own, so that every
# run's assets are new to every proxy).
load() {
  case $CASE in
  same) echo "-c $CONNS -d $DURATION -size $ASSET_SIZE -url https://$GAME_HOST/kcs2/img/same/asset.png" ;;
  distinct) echo "-c $CONNS -d $DURATION -size $ASSET_SIZE -url https://$GAME_HOST/kcs2/img/d/$1/{n}.png" ;;
  gamestart) echo "-c $GAME_START_CONNS -d 0 -n $GAME_START_ASSETS -url https://$GAME_HOST/kcs2/img/gs/$1/{n}.png" ;;
  gamestart-link) echo "-c $GAME_START_CONNS -d 0 -n $GAME_START_ASSETS -url https://$GAME_HOST/kcs2/img/gslink/$1/{n}.png" ;;
  *) die "BENCH_CASE=$CASE: want same, distinct, gamestart or gamestart-link" ;;
  esac
}
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
    wait_idle
    c0=$(cpu_ticks "$pid")
    # shellcheck disable=SC2046 # load's flags are words
    "$WORK/bin/loadgen" -proxy "127.0.0.1:$port" -ca "$ca" $(load "r$r-$v-$RANDOM") >"$WORK/loadgen.out"
    c1=$(cpu_ticks "$pid")
    line=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
print("round %s %s rps=%.0f p99_ms=%.2f seconds=%.3f errors=%d cpu_us_per_req=%.0f" % (sys.argv[2], sys.argv[3], r["rps"], r["p99_ms"], r["seconds"], r["errors"],
      (int(sys.argv[4]) / int(sys.argv[5]) * 1e6) / max(r["requests"], 1)))' "$WORK/loadgen.out" "$r" "$v" "$((c1 - c0))" "$CLK_TCK")
    if [ "$bin" != - ]; then
      settle_copy "$bin" "$conf" "$data" "$ctl"
      m=$(curl -sf --max-time 10 -H "Authorization: Bearer $(cat "$data/control.token")" "http://127.0.0.1:$ctl/metrics")
      line="$line shed_total=$(metric fusou_captures_shed_total <<<"$m")/$(metric fusou_captures_total <<<"$m")"
    fi
    echo "$line" | tee -a "$RESULTS"
  done
done

python3 - "$RESULTS" <<'EOF'
import collections, re, statistics, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    m = re.match(r"round (\d+) (\S+) rps=(\d+) p99_ms=(\S+) seconds=(\S+) errors=(\d+) cpu_us_per_req=(\d+)", line)
    if m:
        runs[int(m[1])][m[2]] = (int(m[3]), float(m[4]), float(m[5]), int(m[6]), int(m[7]))
for v in ("A", "B"):
    rate = [runs[r][v][0] / runs[r]["goproxy"][0] for r in sorted(runs)]
    p99 = [runs[r][v][1] / runs[r]["goproxy"][1] for r in sorted(runs)]
    secs = [runs[r][v][2] / runs[r]["goproxy"][2] for r in sorted(runs)]
    cpu = [runs[r][v][4] for r in sorted(runs)]
    errors = sum(runs[r][v][3] for r in runs)
    print("%s / goproxy req/s: %s, median %.2f; p99 median %.2f; total time %s, median %.3f; CPU us/req median %.0f; errors %d" % (
        v, " ".join("%.2f" % x for x in rate), statistics.median(rate), statistics.median(p99),
        " ".join("%.3f" % x for x in secs), statistics.median(secs), statistics.median(cpu), errors))
print("goproxy CPU us/req median %.0f; total time median %.3f s" % (
    statistics.median(runs[r]["goproxy"][4] for r in runs), statistics.median(runs[r]["goproxy"][2] for r in runs)))
EOF
