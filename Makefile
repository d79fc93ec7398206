# make test   the README's test command
# make bench  fusou-proxy against nginx direct, plain goproxy and mitmproxy (bench/run.sh;
#             installs nginx, hey and mitmproxy with apt; results under bench/out/)
# make soak   fusou-proxy under mixed traffic and API faults for SOAK_MINUTES (default 30),
#             failing if memory, goroutines or open files keep growing (bench/soak.sh)
# make ab     the work tree's fusou-proxy against BENCH_A_REV's (default HEAD) and plain goproxy,
#             many short alternating rounds (bench/ab.sh)
# make duel   the work tree's fusou-proxy and BENCH_A_REV's under load at the same time: CPU per
#             request, B against A (bench/duel.sh)
# None of them runs in CI.

SOAK_MINUTES ?= 30

.PHONY: test bench soak ab duel

test:
	go test -race ./...

bench:
	bash bench/run.sh

soak:
	SOAK_MINUTES=$(SOAK_MINUTES) bash bench/soak.sh

ab:
	bash bench/ab.sh

duel:
	bash bench/duel.sh
