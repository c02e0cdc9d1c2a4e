#!/usr/bin/env python3
"""How the cost of a /detect cache miss grows with the number of cache entries (stdlib only).

One mock (0 ms) and one gateway on the test host with the cache on; batches of POST /detect
with unique URLs (every request a miss that writes 4 entries: the photo and its 3 crops).
Per batch: misses, req/s, p50 and the test host's CPU time per request.

  python3 bench/cache_growth.py [--batches 8] [--seconds 4] [--connections 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gwbench.common import IMAGE, RESULTS, ROOT  # noqa: E402
from gwbench.load import Load, run_wrk, scrape, series_sum  # noqa: E402
from gwbench.procs import Host, cpu_seconds, preflight  # noqa: E402
from gwbench.report import fmt, machine_info  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--latency-ms", type=int, default=0)
    cfg = ap.parse_args()
    cfg.threads, cfg.timeout = 1, 10
    cfg.quick, cfg.base_url, cfg.host_bin = False, None, None
    host_bin = preflight(cfg)
    workdir = Path(tempfile.mkdtemp(prefix="ximilar-gw-cache-growth-"))
    host = Host(host_bin, workdir, ROOT / "spin.toml")
    rows = []
    try:
        mock = host.mock(cfg.latency_ms)
        gw = host.gateway(mock, cache_ttl_s=3600)
        load = Load("miss", gw.url, "/detect", body=json.dumps({"url": IMAGE}), mode="unique")
        print(f"{'batch':>5}{'misses':>8}{'req/s':>9}{'p50 ms':>9}{'host CPU µs/req':>17}{'misses so far':>15}")
        for i in range(cfg.batches):
            c0 = cpu_seconds(gw.p.pid)
            r = run_wrk(cfg, load, cfg.connections, cfg.seconds)
            c1 = cpu_seconds(gw.p.pid)
            total = series_sum(scrape(gw.url), "gateway_cache_misses_total", handler="detect")
            cpu = (c1 - c0) * 1e6 / r["requests"] if r["requests"] else None
            rows.append({"batch": i, "requests": r["requests"], "rps": r["rps"], "p50_ms": r["p50_ms"],
                         "host_cpu_us_per_request": cpu, "misses_so_far": total})
            print(f"{i:>5}{r['requests']:>8}{r['rps']:>9.1f}{r['p50_ms']:>9.2f}{fmt(cpu, '.0f'):>17}{total:>15.0f}",
                  flush=True)
    finally:
        host.stop_all()
    out = RESULTS / "cache-growth.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python3", *sys.argv]), "machine": machine_info(),
                               "rows": rows}, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
