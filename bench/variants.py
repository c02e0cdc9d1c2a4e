#!/usr/bin/env python3
"""Compare gateway builds side by side (an experiment tool next to bench/run.py; stdlib only).

Each variant is a spin.toml (e.g. of a patched build outside the repository). In each round,
interleaved, every variant and the forwarder baseline get a fresh mock and a fresh test host and
are measured on:
  proxy  POST /detect (unique URLs, cache off) at --connections, --latency-ms upstream
  fast   POST /detect {} (the 422 path: validation, metrics, log line, no upstream call)
         at 16 connections (the forwarder: its one-variable probe)
reporting req/s, p50, p99 and the serving host's CPU time per request (medians).

  python3 bench/variants.py --variant repo=spin.toml --variant patched=/tmp/x/spin.toml
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gwbench.common import IMAGE, RESULTS, ROOT, die  # noqa: E402
from gwbench.load import Load, measure, records_body  # noqa: E402
from gwbench.procs import Host, preflight, raise_nofile  # noqa: E402
from gwbench.report import fmt, machine_info, summarise  # noqa: E402
from gwbench.scenarios import rotate  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", required=True, help="name=path/to/spin.toml (repeatable)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=10)
    ap.add_argument("--no-fast", action="store_true", help="skip the 422 fast-path measurement")
    ap.add_argument("--out", help="JSON file (default bench/results/variants-<time>.json)")
    cfg = ap.parse_args()
    variants = {}
    for v in cfg.variant:
        name, _, path = v.partition("=")
        variants[name] = Path(path).resolve()
        if not variants[name].is_file():
            die(f"{path}: no such manifest")
    cfg.quick = False
    cfg.base_url = None
    cfg.host_bin = None
    host_bin = preflight(cfg)
    raise_nofile(1024)
    machine = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="ximilar-gw-variants-"))
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    proxy_runs, fast_runs = [], []
    names = ["forwarder", *variants]
    hosts = {}
    for i, name in enumerate(names):
        # A folder per host: each numbers its processes and its gateways' state folders from 001.
        (workdir / str(i)).mkdir()
        hosts[name] = Host(host_bin, workdir / str(i), variants.get(name, ROOT / "spin.toml"))
    try:
        for rnd in range(cfg.rounds):
            for name in rotate(names, rnd):
                host = hosts[name]
                mock = host.mock(cfg.latency_ms)
                svc = None
                try:
                    svc = host.forwarder(mock) if name == "forwarder" else host.gateway(mock, cache_ttl_s=0)
                    if name == "forwarder":
                        load = Load(name, svc.url, "/detect", body=records_body(IMAGE), mode="unique")
                        fast = Load(name, svc.url, "/_test/var/upstream_path", method="GET")
                    else:
                        load = Load(name, svc.url, "/detect", body=json.dumps({"url": IMAGE}), mode="unique")
                        fast = Load(name, svc.url, "/detect", body="{}", expect="422")
                    r = measure(cfg, load, cfg.connections, procs={"host": svc, "mock": mock})
                    r["round"] = rnd
                    proxy_runs.append(r)
                    if not cfg.no_fast:
                        f = measure(cfg, fast, 16, warmup=2, duration=5, procs={"host": svc})
                        f["round"] = rnd
                        fast_runs.append(f)
                finally:
                    host.stop(svc, mock)
    finally:
        for h in hosts.values():
            h.stop_all()

    proxy, fast = summarise(proxy_runs), summarise(fast_runs)
    print(f"\nproxy: POST /detect, {cfg.connections} connections, {cfg.latency_ms} ms upstream, cache off "
          f"[medians of {cfg.rounds} rounds x {cfg.duration} s]")
    print(f"  {'variant':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'host CPU µs/req':>17}  vs forwarder")
    fw = proxy.get("forwarder")
    for name, s in proxy.items():
        vs = ""
        if fw and name != "forwarder" and s["p50_ms"] is not None:
            vs = (f"p50 {s['p50_ms'] - fw['p50_ms']:+.2f} ms, p99 {s['p99_ms'] - fw['p99_ms']:+.2f} ms, "
                  f"throughput {100 * s['rps'] / fw['rps']:.1f} %")
        print(f"  {name:<22}{s['rps']:>9.1f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}"
              f"{fmt(s['host_cpu_us_per_request'], '.0f'):>17}  {vs}")
    if fast:
        print("\nfast path (16 connections, no upstream): gateway POST /detect {} -> 422; forwarder: variable probe")
        print(f"  {'variant':<22}{'req/s':>9}{'p50 ms':>9}{'host CPU µs/req':>17}")
        for name, s in fast.items():
            print(f"  {name:<22}{s['rps']:>9.1f}{s['p50_ms']:>9.2f}{fmt(s['host_cpu_us_per_request'], '.0f'):>17}")
    out = Path(cfg.out) if cfg.out else RESULTS / f"variants-{started}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python3", *sys.argv]), "machine": machine,
                               "variants": {k: str(v) for k, v in variants.items()},
                               "proxy": {"summary": proxy, "runs": proxy_runs},
                               "fast": {"summary": fast, "runs": fast_runs}}, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
