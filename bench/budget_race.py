#!/usr/bin/env python3
"""Does a caller's daily budget hold when its requests arrive all at once? (Python 3 stdlib.)

Sends N distinct /detect misses at the same moment, all with one caller's key, to a running
gateway, and counts what Ximilar billed on the mock's own credit counter. The gateway must be
configured with that key and a budget B (XIMILAR_INBOUND_KEYS=name:<key>:B), use the mock as
its api_url, and start from a fresh day for that caller. Passes when billed <= B and every
request was answered (200 within the budget, 429 beyond it).

  target/release/spin-test-host mock --listen 127.0.0.1:9000 --latency-ms 300 --token T
  XIMILAR_INBOUND_KEYS=orch:budget-race-key-0123456789:5 spin up ... \\
      --variable api_url=http://127.0.0.1:9000 --variable api_token=T
  python3 bench/budget_race.py --base-url http://127.0.0.1:3000 --mock-url http://127.0.0.1:9000 \\
      --token T --key budget-race-key-0123456789 --budget 5 [--requests 40]

The mock's latency keeps every request in flight while the others arrive: with a budget that
is read rather than reserved, all of them pass the check. Only loopback URLs are accepted.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import urllib.error
import urllib.request
import uuid

from gwbench.common import die
from gwbench.load import mock_credits
from gwbench.scenarios import check_loopback


def credits(mock_url: str, token: str) -> int:
    billed = mock_credits(mock_url, token)
    if billed is None:
        die(f"the mock at {mock_url} did not report its credits (wrong token?)", 1)
    return billed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--mock-url", required=True)
    ap.add_argument("--token", required=True, help="the mock's token")
    ap.add_argument("--key", required=True, help="the caller's key")
    ap.add_argument("--budget", type=int, required=True, help="the caller's budget as configured")
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()
    gateway, mock = check_loopback(args.base_url, False), check_loopback(args.mock_url, False)

    before = credits(mock, args.token)
    run = uuid.uuid4().hex  # distinct across runs as well as across requests
    start = threading.Barrier(args.requests)
    statuses: list[int | str] = [0] * args.requests

    def one(i: int) -> None:
        body = json.dumps({"url": f"https://shop.example/budget-race/{run}/{i}.jpg"}).encode()
        req = urllib.request.Request(gateway + "/detect", data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {args.key}"})
        start.wait()
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                statuses[i] = r.status
        except urllib.error.HTTPError as e:
            statuses[i] = e.code
        except OSError as e:
            statuses[i] = type(e).__name__

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    billed = credits(mock, args.token) - before
    counts = collections.Counter(statuses)
    answered = all(s in (200, 429) for s in statuses)
    ok = billed <= args.budget and answered
    print(f"{args.requests} concurrent distinct /detect, budget {args.budget}: billed {billed}; "
          f"answers {dict(sorted(counts.items(), key=str))}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
