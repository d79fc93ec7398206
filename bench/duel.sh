#!/usr/bin/env bash
# shellcheck disable=SC2119 # functions whose arguments are optional
# shellcheck source-path=SCRIPTDIR
# bench/duel.sh: two fusou-proxy builds under load at the same time, to tell whether a change
# makes a request cheaper. Build A is a git revision (BENCH_A_REV, default HEAD), build B the
# work tree.
#
# make ab runs the builds one after another, so each round sees the machine at a different
# speed: on this VM two identical builds came out at 0.99 and 0.83 of goproxy in one make ab.
# Here both builds take new assets at the same moment (BENCH_CONNS connections each, through
# bench/loadgen), so a slow spell slows both alike, and each round compares the CPU each used
# per request. Two identical builds differ by 0 to 4 % per round, 1 to 2 % in the median.
# The request rates are printed too, but they say less: the two builds share the CPU, and one
# that keeps more threads busy gets more of it.
#
# After each round both builds commit and upload what they captured before the next begins.
# Prints a line per round and the medians of B/A. Nothing is written to the docs.
#
# Knobs (environment): BENCH_A_REV (HEAD), BENCH_ROUNDS (8), BENCH_DURATION (6s), BENCH_CONNS
# (8 per build).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

A_REV=${BENCH_A_REV:-HEAD}
ROUNDS=${BENCH_ROUNDS:-8}
DURATION=${BENCH_DURATION:-6s}
CONNS=${BENCH_CONNS:-8}
CLK_TCK=$(getconf CLK_TCK)

stage_two_builds duel "$A_REV" # start_fusou takes no load itself: the two copies share its configuration
start_fusou_copy a "$WORK/bin-a/fusou-proxy"
A_PORT=$COPY_PORT A_CTL=$COPY_CTL A_PID=$COPY_PID
start_fusou_copy b "$WORK/bin/fusou-proxy"
B_PORT=$COPY_PORT B_CTL=$COPY_CTL B_PID=$COPY_PID

# load NAME PORT ROUND sends new assets through copy NAME for one round.
load() {
  "$WORK/bin/loadgen" -proxy "127.0.0.1:$2" -ca "$WORK/$1-ca.pem" -c "$CONNS" -d "$DURATION" -size "$ASSET_SIZE" \
    -url "https://$GAME_HOST/kcs2/img/d/duel$3-$1-$RANDOM/{n}.png" >"$WORK/$1.json"
}

for v in "a $A_PORT" "b $B_PORT"; do # warm both: leaf, connection pools
  read -r name port <<<"$v"
  "$WORK/bin/loadgen" -proxy "127.0.0.1:$port" -ca "$WORK/$name-ca.pem" -c 32 -n 2000 \
    -url "https://$GAME_HOST/kcs2/img/same/asset.png" >/dev/null
done

RESULTS=$WORK/duel.txt
for ((r = 1; r <= ROUNDS; r++)); do
  a0=$(cpu_ticks "$A_PID") b0=$(cpu_ticks "$B_PID")
  load a "$A_PORT" "$r" &
  la=$!
  load b "$B_PORT" "$r" &
  lb=$!
  wait "$la" "$lb"
  a1=$(cpu_ticks "$A_PID") b1=$(cpu_ticks "$B_PID")
  python3 - "$r" "$((a1 - a0))" "$((b1 - b0))" "$CLK_TCK" "$WORK/a.json" "$WORK/b.json" <<'EOF' | tee -a "$RESULTS"
import json, sys
r, ta, tb, hz, ja, jb = sys.argv[1:]
a, b = json.load(open(ja)), json.load(open(jb))
ca = int(ta) / int(hz) * 1e6 / max(a["requests"], 1)
cb = int(tb) / int(hz) * 1e6 / max(b["requests"], 1)
print("round %s A rps=%.0f cpu_us_per_req=%.0f B rps=%.0f cpu_us_per_req=%.0f B/A cpu=%.3f rps=%.3f" % (
    r, a["rps"], ca, b["rps"], cb, cb / ca, b["rps"] / a["rps"]))
EOF
  settle_copy "$WORK/bin-a/fusou-proxy" "$WORK/a.toml" "$WORK/a-data" "$A_CTL" &
  sa=$!
  settle_copy "$WORK/bin/fusou-proxy" "$WORK/b.toml" "$WORK/b-data" "$B_CTL" &
  sb=$!
  wait "$sa" "$sb"
done

python3 - "$RESULTS" <<'EOF'
import re, statistics, sys
cpu, rps = [], []
for line in open(sys.argv[1]):
    m = re.search(r"B/A cpu=(\S+) rps=(\S+)", line)
    if m:
        cpu.append(float(m[1])); rps.append(float(m[2]))
print("B/A CPU per request: median %.3f (%s)" % (statistics.median(cpu), " ".join("%.3f" % x for x in cpu)))
print("B/A request rate:    median %.3f (%s)" % (statistics.median(rps), " ".join("%.3f" % x for x in rps)))
EOF
