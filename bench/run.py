#!/usr/bin/env python3
"""Load benchmark of ximilar-gw against its baselines (README: targets). Python 3 stdlib only.

The load comes from wrk (Debian: `apt-get install -y wrk`) with bench/wrk.lua; this
script only starts processes, runs wrk, and reports. It installs nothing.

Default mode (the test host, one run, everything against `spin-test-host mock`):

  python3 bench/run.py              # about 8 minutes
  python3 bench/run.py --quick      # CI smoke test of the benchmark itself (~1 minute); not for numbers

  targets, measured against the same mock Ximilar (same binary, latency and token):
    mock       the mock's detect_tags called directly (zero gateway)
    forwarder  bench/forwarder (a bare Spin component that forwards the body) on the test host
    gateway    spin.toml on the test host, POST /detect, cache on and every URL new, so every
               request is a miss that is written to the cache (the costly path); one target
               per --runtime-configs entry: default (runtime-config.toml), memory, file, sqlite
  The test host's key-value model is Spin's SQLite store, with its lock, blocking calls and
  synced writes (tests/host/src/kv/sqlite.rs); Redis is not modelled (use --base-url).
  scenarios:
    a  16 connections, 50 ms upstream: throughput, p50, p99; overhead vs the forwarder
    b  64 connections, 300 ms upstream: the same
    e  1,000 connections in flight, 300 ms upstream: the same, and 0 errors required
    c  cache on: /detect of one repeated URL (hits) vs unique URLs (misses), 64 connections,
       50 ms upstream; the mock's credit counter shows whether Ximilar was called
    d  no upstream work, CPU bound (16 connections): forwarder probes (one variable read; one
       key-value increment; one stderr line) vs the gateway's 405 and 422 fast paths (pipeline,
       metrics increments and log line, no Ximilar call) and GET /metrics: what the per-request
       recording costs. Every run also reports the CPU time per request of the test host, the
       mock and wrk (from /proc and getrusage), steadier than req/s on a shared machine.
    f  coalescing: bursts of 20 identical /detect at once; one upstream call per burst
    g  crop mode's image step: /search of new boxes in a 12 MP JPEG from the loopback image
       host (`spin-test-host images`), one at a time, crop mode on vs off; the download and
       the decode + crop + encode times the component logs (image_ms, crop_ms)

  Every measurement is a fresh mock (and host) warmed up for --warmup seconds, then measured
  for --duration seconds; rounds interleave the targets and the table quotes medians.

Already-running gateway (e.g. a real `spin up`):

  python3 bench/run.py --base-url http://127.0.0.1:3000 \\
      [--forwarder-url http://127.0.0.1:3001] [--mock-url http://127.0.0.1:9000 --token T] \\
      [--connections 64] [--upstream-latency-ms 50]

  e.g. the comparison on real Spin 4.0.2 (cache on: unique URLs make every request a miss):
    target/release/spin-test-host mock --listen 127.0.0.1:9000 --latency-ms 50 --token T
    spin up -f bench/forwarder/spin.toml --listen 127.0.0.1:3001 \\
        --variable upstream_url=http://127.0.0.1:9000 --variable upstream_token=T
    spin up --listen 127.0.0.1:3000 --runtime-config-file runtime-config.toml \\
        --variable api_url=http://127.0.0.1:9000 --variable api_token=T

  measures POST /detect on the gateway (unique URLs, so every request is a miss whatever the
  cache setting), the forwarder and the mock if given, the same overhead checks, and, unless
  --no-cache-check, a hit-vs-miss run on the gateway. Only loopback URLs are accepted unless
  --allow-non-loopback. With --image-host-url it runs only scenario g against a gateway started
  in crop mode (XIMILAR_SEARCH_CROP=true, XIMILAR_IMAGE_HOST_A=<that URL>).

Output: a table on stdout and a JSON file under bench/results/ (or --out).
Exit status: 0 when the benchmark ran (targets missed or not; --strict makes a missed target
exit 3), 2 when something it needs is missing, 1 when it failed or a target completed no request.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The code lives in the gwbench package next to this script (bench/gwbench/): processes,
# load, scenarios and report. Put bench/ on the path, wherever this script is run from.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gwbench.common import RESULTS, ROOT, TOKEN, die, log  # noqa: E402
from gwbench.procs import RUNTIME_CONFIGS, Host, preflight, raise_nofile, runtime_config_text  # noqa: E402
from gwbench.report import machine_info, report  # noqa: E402
from gwbench.scenarios import (  # noqa: E402
    run_base_url,
    scenario_cache,
    scenario_coalescing,
    scenario_crop,
    scenario_fastpath,
    scenario_overhead,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 round, 2 s per target (CI; not for numbers)")
    ap.add_argument("--scenarios", default="a,b,c,d,e,f,g", help="subset of a,b,c,d,e,f,g (default all)")
    ap.add_argument("--runtime-configs", default="default",
                    help=f"comma-separated runtime configs to measure the gateway with in a, b and e: "
                         f"{', '.join(RUNTIME_CONFIGS)} (default: default, the repository's runtime-config.toml)")
    ap.add_argument("--rounds", type=int, help="rounds per target, interleaved (default 3)")
    ap.add_argument("--duration", type=int, help="measured seconds per run (default 10)")
    ap.add_argument("--warmup", type=int, help="warm-up seconds before each run (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--timeout", type=int, default=10, help="wrk's per-request timeout in s; longer counts as an error (default 10)")
    ap.add_argument("--host-bin", help="spin-test-host binary (default target/release/spin-test-host)")
    ap.add_argument("--out", help="JSON result file (default bench/results/bench-<time>.json)")
    ap.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    ap.add_argument("--gateway-manifest", default=str(ROOT / "spin.toml"),
                    help="the gateway's spin.toml (default the repository's; e.g. a patched build's, for experiments)")
    ap.add_argument("--keep-logs", action="store_true", help="keep the processes' output (under bench/results/)")
    ext = ap.add_argument_group("already-running gateway")
    ext.add_argument("--base-url", help="measure this gateway instead of starting the test host")
    ext.add_argument("--forwarder-url", help="a running bench/forwarder (baseline)")
    ext.add_argument("--mock-url", help="the mock Ximilar the gateway uses (zero-gateway baseline and call counting)")
    ext.add_argument("--gateway-pid", type=int, help="pid of the process serving --base-url (e.g. `spin up`): "
                     "its CPU time per request is reported")
    ext.add_argument("--forwarder-pid", type=int, help="pid of the process serving --forwarder-url, likewise")
    ext.add_argument("--token", help=f"the mock's token (default {TOKEN})")
    ext.add_argument("--connections", type=int, default=64, help="connections in --base-url mode (default 64)")
    ext.add_argument("--upstream-latency-ms", type=int, help="the mock's latency, for the report only")
    ext.add_argument("--no-cache-check", action="store_true", help="skip the hit-vs-miss run in --base-url mode")
    ext.add_argument("--image-host-url", help="run only scenario g (crop step) against the gateway, which must be in "
                                             "crop mode with this image host (spin-test-host images) allowed")
    ext.add_argument("--allow-non-loopback", action="store_true", help="accept URLs that are not 127.0.0.1/localhost")
    cfg = ap.parse_args()

    if cfg.quick:
        defaults = dict(rounds=1, duration=2, warmup=1)
        cfg.fast_duration, cfg.fast_warmup = 2, 1
    else:
        defaults = dict(rounds=3, duration=10, warmup=3)
        cfg.fast_duration, cfg.fast_warmup = 5, 2
    for k, v in defaults.items():
        if getattr(cfg, k) is None:
            setattr(cfg, k, v)
    scenarios = [s.strip() for s in cfg.scenarios.split(",") if s.strip()]
    if any(s not in "abcdefg" for s in scenarios):
        die(f"--scenarios: expected a subset of a,b,c,d,e,f,g, got {cfg.scenarios}")
    cfg.runtime_configs = [r.strip() for r in cfg.runtime_configs.split(",") if r.strip()]
    for rc in cfg.runtime_configs:
        runtime_config_text(rc)  # dies on an unknown name

    host_bin = preflight(cfg)
    # 1,000 connections: wrk holds 1,000 sockets, the host 1,000 in and up to 1,000 out.
    cfg.e_connections = 1000
    need = 4096 if ("e" in scenarios or (cfg.base_url and cfg.connections >= 500)) else 1024
    got = raise_nofile(need)
    if got < need:
        if cfg.quick and not cfg.base_url:
            cfg.e_connections = max(64, (got - 256) // 3)
            log(f"open-file limit {got} (< {need}): the quick run uses {cfg.e_connections} connections in (e)")
        else:
            die(f"open-file limit is {got} and cannot be raised to {need} (hard limit); 1,000 connections need it: "
                f"raise it (ulimit -Hn / LimitNOFILE) or leave out scenario e (--scenarios a,b,c,d)")

    started = dt.datetime.now(dt.timezone.utc)
    machine = machine_info()
    log(f"machine: {machine['nproc']} cpus ({machine['cpu_model']}), {machine['mem_total_gib']} GiB, "
        f"load {machine['loadavg_at_start'][0]:.2f}; {machine['wrk']}")
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="ximilar-gw-bench-"))
    host = Host(host_bin, workdir, Path(cfg.gateway_manifest).resolve()) if host_bin else None
    ok = False
    try:
        if cfg.base_url:
            results = run_base_url(cfg)
        else:
            if "a" in scenarios:
                results.append(scenario_overhead(cfg, host, "a", 16, 50))
            if "b" in scenarios:
                results.append(scenario_overhead(cfg, host, "b", 64, 300))
            if "e" in scenarios:
                results.append(scenario_overhead(cfg, host, "e", cfg.e_connections, 300))
            if "c" in scenarios:
                results.append(scenario_cache(cfg, host, 64, 50))
            if "d" in scenarios:
                results.append(scenario_fastpath(cfg, host, 16))
            if "f" in scenarios:
                results.append(scenario_coalescing(cfg, host, 20, 50))
            if "g" in scenarios:
                results.append(scenario_crop(cfg, host))
        ok = True
    except KeyboardInterrupt:
        log("interrupted")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        log(f"failed: {e}")
    finally:
        if host:
            host.stop_all()

    checks = report(results, cfg) if results else []
    finished = dt.datetime.now(dt.timezone.utc)
    out = Path(cfg.out) if cfg.out else RESULTS / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if cfg.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "elapsed_s": round((finished - started).total_seconds(), 1),
        "quick": cfg.quick,
        "complete": ok,
        "mode": "base-url" if cfg.base_url else "test-host",
        "note": ("test host (tests/host, wasmtime 44, Spin's SQLite key-value model), not Spin"
                 if not cfg.base_url else "external targets as given"),
        "gateway_manifest": None if cfg.base_url else str(Path(cfg.gateway_manifest).resolve()),
        "settings": {"rounds": cfg.rounds, "duration_s": cfg.duration, "warmup_s": cfg.warmup,
                     "fast_duration_s": cfg.fast_duration, "fast_warmup_s": cfg.fast_warmup,
                     "wrk_threads": cfg.threads, "wrk_timeout_s": cfg.timeout},
        "machine": machine,
        "loadavg_at_end": os.getloadavg(),
        "results": results,
        "checks": checks,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nresults: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}  ({doc['elapsed_s']} s)")
    if cfg.keep_logs:
        dest = out.with_suffix(".logs")
        shutil.copytree(workdir, dest, dirs_exist_ok=True)
        print(f"process output: {dest}")
    shutil.rmtree(workdir, ignore_errors=True)
    if not ok:
        return 1
    empty = [f"({res['scenario']}) {name}" for res in results for name, v in res["summary"].items() if not v["requests"]]
    if empty:
        log(f"failed: no request completed for {', '.join(empty)}")
        return 1
    if cfg.strict and any(c["met"] is False for c in checks):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
