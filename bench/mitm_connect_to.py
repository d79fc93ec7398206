"""mitmproxy addon for bench/run.sh: dial overrides in the manner of curl --connect-to.

BENCH_CONNECT_TO holds comma-separated HOST:PORT:ADDR:PORT2 rules. The upstream connection
goes to ADDR:PORT2 while SNI and certificate verification still use HOST (mitmproxy takes the
server's SNI from the client's), as fusou-proxy's proxy.connect_to does.
"""

import os

RULES = {}
for rule in os.environ.get("BENCH_CONNECT_TO", "").split(","):
    if rule:
        host, port, addr, port2 = rule.split(":")
        RULES[(host, int(port))] = (addr, int(port2))


def server_connect(data):
    to = RULES.get(tuple(data.server.address or ()))
    if to:
        data.server.address = to
