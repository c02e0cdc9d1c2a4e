#!/usr/bin/env python3
"""Load benchmark of ximilar-gw against its baselines (DESIGN §6). Python 3 stdlib only.

The load comes from wrk (Debian: `apt-get install -y wrk`) with bench/wrk.lua; this
script only starts processes, runs wrk, and reports. It installs nothing.

Default mode (the test host, one run, everything against `spin-test-host mock`):

  python3 bench/run.py              # about 8 minutes
  python3 bench/run.py --quick      # CI smoke test of the benchmark itself (~1 minute); not for numbers

  targets, measured against the same mock Ximilar (same binary, latency and token):
    mock       the mock's detect_tags called directly (zero gateway)
    forwarder  bench/forwarder (a bare Spin component that forwards the body) on the test host
    gateway    spin.toml on the test host, POST /detect, cache off (cache_ttl_s=0)
  scenarios:
    a  64 connections, 50 ms upstream: throughput, p50, p99; overhead vs the forwarder
    b  1,000 connections in flight, 300 ms upstream: the same, and 0 errors required
    c  cache on: /detect of one repeated URL (hits) vs unique URLs (misses), 64 connections,
       50 ms upstream; the mock's credit counter shows whether Ximilar was called
    d  no upstream work, CPU bound (16 connections): forwarder probes (one variable read; one
       key-value increment; one stderr line) vs the gateway's 405 and 422 fast paths (pipeline,
       metrics increments and log line, no Ximilar call) and GET /metrics: what the per-request
       recording costs. Every run also reports the CPU time per request of the test host, the
       mock and wrk (from /proc and getrusage), steadier than req/s on a shared machine.

  Every measurement is a fresh mock (and host) warmed up for --warmup seconds, then measured
  for --duration seconds; rounds interleave the targets and the table quotes medians.

Already-running gateway (e.g. a real `spin up`):

  python3 bench/run.py --base-url http://127.0.0.1:3000 \\
      [--forwarder-url http://127.0.0.1:3001] [--mock-url http://127.0.0.1:9000 --token T] \\
      [--connections 64] [--upstream-latency-ms 50]

  e.g. the DESIGN §6 comparison on real Spin 4.0.2 (cache off for the overhead numbers):
    target/release/spin-test-host mock --listen 127.0.0.1:9000 --latency-ms 50 --token T
    spin up -f bench/forwarder/spin.toml --listen 127.0.0.1:3001 \\
        --variable upstream_url=http://127.0.0.1:9000 --variable upstream_token=T
    spin up --listen 127.0.0.1:3000 --runtime-config-file runtime-config.toml \\
        --variable api_url=http://127.0.0.1:9000 --variable api_token=T --variable cache_ttl_s=0

  measures POST /detect on the gateway (unique URLs, so every request is a miss whatever the
  cache setting), the forwarder and the mock if given, the same overhead checks, and, unless
  --no-cache-check, a hit-vs-miss run on the gateway. Only loopback URLs are accepted unless
  --allow-non-loopback.

Output: a table on stdout and a JSON file under bench/results/ (or --out).
Exit status: 0 when the benchmark ran (targets missed or not; --strict makes a missed target
exit 3), 2 when something it needs is missing, 1 when it failed or a target completed no request.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA = BENCH / "wrk.lua"
RESULTS = BENCH / "results"
WASM_DIR = ROOT / "target" / "wasm32-wasip2" / "release"
COMPONENTS = ["detect", "tag", "search", "health", "metrics", "forwarder"]
DETECT_PATH = "/tagging/fashion/v2/detect_tags"
ACCOUNT_PATH = "/account/v2/details/"

# Distinctive, obviously fake credentials for the mock (never a real token).
TOKEN = "tok-BENCH-only-0c1d2e"
COLLECTION = "col-BENCH-only-5a6b7c"

# Targets of DESIGN §6.
TARGET_P50_MS = 2.0
TARGET_P99_MS = 15.0
TARGET_THROUGHPUT = 0.90

IMAGE = "https://shop.example/bench/outfit-{n}.jpg"


def die(msg: str, code: int = 2) -> None:
    print(f"bench: {msg}", file=sys.stderr)
    sys.exit(code)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


class Proc:
    """A process this script started (stdout/stderr to files), stopped by its pid only."""

    def __init__(self, name: str, cmd: list[str], workdir: Path, env: dict[str, str], ready: str, timeout: float):
        self.name = name
        self.cmd = cmd
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.p = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
                                  cwd=workdir, env=env)
        self.url = self._wait_ready(re.compile(ready), timeout)

    def _wait_ready(self, pattern: re.Pattern, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.out_path.read_text(errors="replace")
            m = pattern.search(text)
            if m:
                return m.group(1).rstrip("/")
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        err = self.err_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"{self.name} did not start ({' '.join(self.cmd)}):\n{err}")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)  # serve and mock stop on ctrl-c
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._out.close()
        self._err.close()


class Host:
    """Starts the mock, the forwarder and the gateway on the test host, on free loopback ports."""

    def __init__(self, host_bin: Path, workdir: Path, gateway_manifest: Path):
        self.bin = host_bin
        self.gateway_manifest = gateway_manifest
        self.workdir = workdir
        # Hermetic: the gateway's env provider must not see the caller's XIMILAR_* settings.
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("XIMILAR_", "SPIN_VARIABLE_"))}
        self.seq = 0
        self.live: list[Proc] = []

    def _start(self, name: str, args: list[str], ready: str) -> Proc:
        self.seq += 1
        p = Proc(f"{self.seq:03d}-{name}", [str(self.bin), *args], self.workdir, self.env, ready, timeout=120)
        self.live.append(p)
        return p

    def mock(self, latency_ms: int) -> Proc:
        return self._start("mock", ["mock", "--listen", "127.0.0.1:0", "--latency-ms", str(latency_ms),
                                    "--token", TOKEN, "--collection-id", COLLECTION],
                           r"mock Ximilar listening on (http://\S+)")

    def forwarder(self, mock: Proc) -> Proc:
        return self._start("forwarder", [
            "serve", "--manifest", str(BENCH / "forwarder" / "spin.toml"), "--listen", "127.0.0.1:0",
            "--variable", f"upstream_url={mock.url}",
            "--variable", f"upstream_path={DETECT_PATH}",
            "--variable", f"upstream_token={TOKEN}",
            # The same per-try deadline the gateway sets (attempt_timeout_ms, 10 s).
            "--variable", "upstream_timeout_ms=10000",
        ], r"serving on (http://\S+)")

    def gateway(self, mock: Proc, cache_ttl_s: int) -> Proc:
        return self._start("gateway", [
            "serve", "--manifest", str(self.gateway_manifest),
            "--runtime-config-file", str(ROOT / "runtime-config.toml"), "--listen", "127.0.0.1:0",
            "--variable", f"api_url={mock.url}",
            "--variable", f"api_token={TOKEN}",
            "--variable", f"collection_id={COLLECTION}",
            "--variable", f"cache_ttl_s={cache_ttl_s}",
        ], r"serving on (http://\S+)")

    def stop(self, *procs: Proc) -> None:
        for p in procs:
            if p is not None and p in self.live:
                p.stop()
                self.live.remove(p)

    def stop_all(self) -> None:
        self.stop(*list(reversed(self.live)))


# ---------------------------------------------------------------- http helpers


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def mock_credits(mock_url: str, token: str) -> int | None:
    status, _, body = http("GET", mock_url + ACCOUNT_PATH, headers={"Authorization": f"Token {token}"})
    if status != 200:
        return None
    return int(json.loads(body).get("credits_counter", 0))


def scrape(url: str) -> dict[str, float]:
    """GET /metrics → {series with labels: value} (no HELP/TYPE lines)."""
    status, _, body = http("GET", url + "/metrics")
    out = {}
    if status != 200:
        return out
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


def series_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    total = 0.0
    for key, value in metrics.items():
        if key.split("{", 1)[0] != name:
            continue
        if all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += value
    return total


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            http("GET", url, timeout=2)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# ---------------------------------------------------------------- load


class Load:
    """One wrk target: where, what, and what counts as success."""

    def __init__(self, name: str, url: str, path: str, method: str = "POST", body: str = "-",
                 mode: str = "static", headers: dict | None = None, expect: str = "2xx"):
        self.name, self.url, self.path, self.method = name, url, path, method
        self.body, self.mode, self.expect = body, mode, expect
        self.headers = headers or {}


def records_body(url: str) -> str:
    return json.dumps({"records": [{"_url": url}]})


def run_wrk(cfg, load: Load, connections: int, duration: int) -> dict:
    headers = dict(load.headers)
    if load.method == "POST":
        headers.setdefault("Content-Type", "application/json")
    cmd = ["wrk", "-t", str(max(1, min(cfg.threads, connections))), "-c", str(connections),
           "-d", f"{duration}s", "--timeout", f"{cfg.timeout}s", "-s", str(LUA)]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    nonce = uuid.uuid4().hex[:12]
    cmd += [load.url + load.path, "--", load.method, load.mode, load.body, nonce, load.expect]
    load_before = os.getloadavg()[0]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + cfg.timeout + 60)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    m = re.search(r"^BENCH_JSON (\{.*\})$", proc.stdout, re.M)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    r = json.loads(m.group(1))
    secs = r["duration_us"] / 1e6
    e = r["errors"]
    lat = r["latency_us"]
    return {
        "target": load.name,
        "connections": connections,
        "duration_s": duration,
        "requests": r["requests"],
        "rps": r["requests"] / secs if secs else 0.0,
        "p50_ms": lat["p50"] / 1000,
        "p90_ms": lat["p90"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "max_ms": lat["max"] / 1000,
        "mean_ms": lat["mean"] / 1000,
        "socket_errors": e["connect"] + e["read"] + e["write"] + e["timeout"],
        "errors_detail": e,
        "unexpected_status": r["responses"]["unexpected"],
        "responses": r["responses"],
        "wrk_cpu_us_per_request": wrk_cpu * 1e6 / r["requests"] if r["requests"] else None,
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


def measure(cfg, load: Load, connections: int, warmup: int | None = None, duration: int | None = None,
            procs: dict | None = None) -> dict:
    """Warm-up run (discarded), then the measured run; CPU time of `procs` ({role: Proc}) per request."""
    warmup = cfg.warmup if warmup is None else warmup
    duration = cfg.duration if duration is None else duration
    procs = {k: v for k, v in (procs or {}).items() if getattr(v, "p", None) is not None}
    if warmup > 0:
        run_wrk(cfg, load, connections, warmup)
        settle(procs)
    before = {k: cpu_seconds(v.p.pid) for k, v in procs.items()}
    r = run_wrk(cfg, load, connections, duration)
    after = {k: cpu_seconds(v.p.pid) for k, v in procs.items()}
    r["cpu_us_per_request"] = {
        k: (after[k] - before[k]) * 1e6 / r["requests"] if r["requests"] and None not in (before[k], after[k]) else None
        for k in procs
    }
    log_run(load.name, connections, r)
    return r


def settle(procs: dict, idle_share: float = 0.05, limit: float = 20.0) -> None:
    """After a warm-up, wait until the processes are idle: wrk drops its connections with
    requests in flight, and a server may still be working on them (or waiting on the slow
    upstream) when the measured run starts."""
    pids = [p.p.pid for p in procs.values()]
    if not pids:
        return
    deadline = time.monotonic() + limit
    last = sum(cpu_seconds(pid) or 0 for pid in pids)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = sum(cpu_seconds(pid) or 0 for pid in pids)
        if now - last <= 0.25 * idle_share:
            return
        last = now


def log_run(name: str, connections: int, r: dict, extra: str = "") -> None:
    cpu = "  ".join(f"{k} CPU {v:.0f} µs/req" for k, v in r.get("cpu_us_per_request", {}).items() if v is not None)
    log(f"  {name:<26} c={connections:<5} {r['rps']:9.1f} req/s  p50 {r['p50_ms']:8.2f} ms  "
        f"p99 {r['p99_ms']:8.2f} ms  sock err {r['socket_errors']}  bad status {r['unexpected_status']}  {cpu}{extra}")


def rotate(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarise(runs: list[dict]) -> dict:
    """Medians per target across rounds."""
    out = {}
    for name in dict.fromkeys(r["target"] for r in runs):
        rs = [r for r in runs if r["target"] == name]
        out[name] = {
            "rounds": len(rs),
            "rps": median([r["rps"] for r in rs]),
            "p50_ms": median([r["p50_ms"] for r in rs]),
            "p99_ms": median([r["p99_ms"] for r in rs]),
            "max_ms": max(r["max_ms"] for r in rs),
            "socket_errors": sum(r["socket_errors"] for r in rs),
            "unexpected_status": sum(r["unexpected_status"] for r in rs),
            "requests": sum(r["requests"] for r in rs),
            "rps_all": [round(r["rps"], 1) for r in rs],
            "p50_all": [round(r["p50_ms"], 2) for r in rs],
            "p99_all": [round(r["p99_ms"], 2) for r in rs],
            "host_cpu_us_per_request": median([r.get("cpu_us_per_request", {}).get("host") for r in rs]),
            "mock_cpu_us_per_request": median([r.get("cpu_us_per_request", {}).get("mock") for r in rs]),
            "wrk_cpu_us_per_request": median([r.get("wrk_cpu_us_per_request") for r in rs]),
            "loadavg_1m": median([r.get("loadavg_1m_before") for r in rs]),
        }
    return out


def overhead(summary: dict, gw: str, base: str) -> dict | None:
    if gw not in summary or base not in summary:
        return None
    g, b = summary[gw], summary[base]
    if not g["requests"] or not b["requests"]:
        return {"vs": base, "p50_ms": None, "p99_ms": None, "throughput_ratio": 0.0 if b["requests"] else None,
                "note": "a target completed no request"}
    return {
        "vs": base,
        "p50_ms": g["p50_ms"] - b["p50_ms"],
        "p99_ms": g["p99_ms"] - b["p99_ms"],
        "throughput_ratio": g["rps"] / b["rps"] if b["rps"] else None,
    }


# ---------------------------------------------------------------- scenarios (test host)


def overhead_loads(mock: Proc | None, fwd: Proc | None, gw: Proc | None) -> dict[str, Load]:
    loads = {}
    if mock:
        loads["mock"] = Load("mock", mock.url, DETECT_PATH, body=records_body(IMAGE), mode="unique",
                             headers={"Authorization": f"Token {TOKEN}"})
    if fwd:
        loads["forwarder"] = Load("forwarder", fwd.url, "/detect", body=records_body(IMAGE), mode="unique")
    if gw:
        loads["gateway"] = Load("gateway", gw.url, "/detect", body=json.dumps({"url": IMAGE}), mode="unique")
    return loads


def scenario_overhead(cfg, host: Host, key: str, connections: int, latency_ms: int) -> dict:
    """a / b: mock direct, forwarder, gateway (cache off); fresh processes per measurement."""
    log(f"scenario {key}: {connections} connections, {latency_ms} ms upstream, "
        f"{cfg.rounds} round(s) x {cfg.warmup}+{cfg.duration} s")
    runs = []
    targets = ["mock", "forwarder", "gateway"]
    for rnd in range(cfg.rounds):
        for name in rotate(targets, rnd):
            mock = host.mock(latency_ms)
            svc = None
            try:
                if name == "forwarder":
                    svc = host.forwarder(mock)
                elif name == "gateway":
                    svc = host.gateway(mock, cache_ttl_s=0)
                loads = overhead_loads(mock if name == "mock" else None,
                                       svc if name == "forwarder" else None,
                                       svc if name == "gateway" else None)
                r = measure(cfg, loads[name], connections, procs={"host": svc, "mock": mock})
                r["round"] = rnd
                runs.append(r)
            finally:
                host.stop(svc, mock)
    summary = summarise(runs)
    return {
        "scenario": key,
        "connections": connections,
        "upstream_latency_ms": latency_ms,
        "runs": runs,
        "summary": summary,
        "overhead": {"gateway": overhead(summary, "gateway", "forwarder"),
                     "forwarder": overhead(summary, "forwarder", "mock"),
                     "gateway_vs_mock": overhead(summary, "gateway", "mock")},
    }


def cache_phase(cfg, gw: Proc, mock: Proc, load: Load, connections: int, token: str = TOKEN) -> dict:
    c0 = mock_credits(mock.url, token)
    procs = {k: v for k, v in (("host", gw), ("mock", mock)) if getattr(v, "p", None) is not None}
    if cfg.warmup > 0:
        run_wrk(cfg, load, connections, cfg.warmup)
        settle(procs)
    c1, m1 = mock_credits(mock.url, token), scrape(gw.url)
    before = {k: cpu_seconds(v.p.pid) for k, v in procs.items()}
    r = run_wrk(cfg, load, connections, cfg.duration)
    after = {k: cpu_seconds(v.p.pid) for k, v in procs.items()}
    r["cpu_us_per_request"] = {
        k: (after[k] - before[k]) * 1e6 / r["requests"] if r["requests"] and None not in (before[k], after[k]) else None
        for k in procs
    }
    time.sleep(0.5)  # requests in flight when wrk stopped still finish
    c2, m2 = mock_credits(mock.url, token), scrape(gw.url)

    def d(m_after, m_before, name, **labels):
        return series_sum(m_after, name, **labels) - series_sum(m_before, name, **labels)

    r["upstream_calls_measured"] = (c2 - c1) if None not in (c1, c2) else None
    r["upstream_calls_warmup"] = (c1 - c0) if None not in (c0, c1) else None
    r["metrics_delta"] = {
        "gateway_cache_hits_total": d(m2, m1, "gateway_cache_hits_total", handler="detect"),
        "gateway_cache_misses_total": d(m2, m1, "gateway_cache_misses_total", handler="detect"),
        "ximilar_requests_total": d(m2, m1, "ximilar_requests_total", endpoint="detect_tags"),
    }
    log_run(load.name, connections, r, f"  HIT {r['responses']['cache_hit']} MISS {r['responses']['cache_miss']}  "
            f"upstream calls {r['upstream_calls_measured']}")
    return r


def scenario_cache(cfg, host: Host, connections: int, latency_ms: int) -> dict:
    """c: one gateway with the cache on; a repeated URL (hits) vs unique URLs (misses)."""
    log(f"scenario c: cache hit vs miss, {connections} connections, {latency_ms} ms upstream")
    runs = []
    for rnd in range(cfg.rounds):
        mock = host.mock(latency_ms)
        gw = None
        try:
            gw = host.gateway(mock, cache_ttl_s=3600)
            hit_url = f"https://shop.example/bench/repeated-{uuid.uuid4().hex[:8]}.jpg"
            body = json.dumps({"url": hit_url}).encode()
            first = http("POST", gw.url + "/detect", body, {"Content-Type": "application/json"})
            second = http("POST", gw.url + "/detect", body, {"Content-Type": "application/json"})
            primed = (first[0] == 200 and second[0] == 200 and second[1].get("x-cache") == "HIT")
            loads = {
                "hit": Load("detect hit", gw.url, "/detect", body=body.decode(), mode="static"),
                "miss": Load("detect miss", gw.url, "/detect", body=json.dumps({"url": IMAGE}), mode="unique"),
            }
            for phase in rotate(["hit", "miss"], rnd):
                r = cache_phase(cfg, gw, mock, loads[phase], connections)
                r["round"] = rnd
                r["phase"] = phase
                r["primed"] = primed
                runs.append(r)
        finally:
            host.stop(gw, mock)
    return cache_result(runs, connections, latency_ms)


def cache_result(runs, connections, latency_ms):
    summary = summarise(runs)
    hits = [r for r in runs if r["phase"] == "hit"]
    misses = [r for r in runs if r["phase"] == "miss"]
    h, m = summary.get("detect hit"), summary.get("detect miss")
    upstream_in_hits = [r["upstream_calls_measured"] for r in hits]
    check = {
        "hit_upstream_calls": upstream_in_hits,
        "hit_all_x_cache_hit": all(r["responses"]["cache_hit"] == r["responses"]["2xx"] > 0 for r in hits),
        "miss_all_x_cache_miss": all(r["responses"]["cache_miss"] == r["responses"]["2xx"] > 0 for r in misses),
        "hit_without_upstream_call": all(x == 0 for x in upstream_in_hits) if upstream_in_hits and None not in upstream_in_hits else None,
        "hit_faster": (h["p50_ms"] < m["p50_ms"] and h["rps"] > m["rps"]) if h and m else None,
    }
    return {"scenario": "c", "connections": connections, "upstream_latency_ms": latency_ms,
            "runs": runs, "summary": summary, "cache": check}


def scenario_fastpath(cfg, host: Host, connections: int) -> dict:
    """d: no upstream work. What the pipeline and its metrics increments cost."""
    log(f"scenario d: fast paths without upstream, {connections} connections")
    runs = []
    names = ["fwd var probe", "fwd kv-increment probe", "fwd stderr-line probe",
             "gw 405 GET /detect", "gw 422 POST /detect {}", "gw GET /metrics"]
    for rnd in range(cfg.rounds):
        mock = host.mock(0)
        fwd = gw = None
        try:
            fwd = host.forwarder(mock)
            gw = host.gateway(mock, cache_ttl_s=0)
            loads = {
                names[0]: Load(names[0], fwd.url, "/_test/var/upstream_path", method="GET"),
                names[1]: Load(names[1], fwd.url, "/_test/incr/default/bench", method="POST"),
                names[2]: Load(names[2], fwd.url, "/_test/log/bench-log-line-of-about-forty-bytes", method="GET"),
                names[3]: Load(names[3], gw.url, "/detect", method="GET", expect="405"),
                names[4]: Load(names[4], gw.url, "/detect", method="POST", body="{}", expect="422"),
                names[5]: Load(names[5], gw.url, "/metrics", method="GET"),
            }
            for name in rotate(names, rnd):
                svc = fwd if name.startswith("fwd") else gw
                r = measure(cfg, loads[name], connections, warmup=cfg.fast_warmup, duration=cfg.fast_duration,
                            procs={"host": svc})
                r["round"] = rnd
                runs.append(r)
            # Series in the store after the round: /metrics reads all of them.
            r_m = scrape(gw.url)
            for r in runs[-len(names):]:
                r["metrics_series_after_round"] = len(r_m)
        finally:
            host.stop(gw, fwd, mock)
    summary = summarise(runs)
    return {"scenario": "d", "connections": connections, "runs": runs, "summary": summary}


# ---------------------------------------------------------------- base-url mode


def check_loopback(url: str, allow: bool) -> str:
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        die(f"not an http(s) URL: {url}")
    if not allow and u.hostname not in ("127.0.0.1", "localhost", "::1"):
        die(f"{url} is not on loopback; pass --allow-non-loopback if you really mean it")
    return url.rstrip("/")


class External:
    """Stands in for Proc when the target is already running."""

    def __init__(self, url):
        self.url = url


def run_base_url(cfg) -> list[dict]:
    gw = External(check_loopback(cfg.base_url, cfg.allow_non_loopback))
    fwd = External(check_loopback(cfg.forwarder_url, cfg.allow_non_loopback)) if cfg.forwarder_url else None
    mock = External(check_loopback(cfg.mock_url, cfg.allow_non_loopback)) if cfg.mock_url else None
    token = cfg.token or TOKEN
    for t in (gw, fwd, mock):
        if t:
            try:
                wait_http(t.url + "/", timeout=5)
            except OSError as e:
                die(f"cannot reach {t.url}: {e}", 1)
    loads = overhead_loads(mock, fwd, gw)
    if mock:
        loads["mock"].headers = {"Authorization": f"Token {token}"}
    log(f"base-url: {cfg.connections} connections, {cfg.rounds} round(s) x {cfg.warmup}+{cfg.duration} s")
    runs = []
    for rnd in range(cfg.rounds):
        for name in rotate(list(loads), rnd):
            r = measure(cfg, loads[name], cfg.connections)
            r["round"] = rnd
            runs.append(r)
    summary = summarise(runs)
    out = [{
        "scenario": "external",
        "connections": cfg.connections,
        "upstream_latency_ms": cfg.upstream_latency_ms,
        "runs": runs,
        "summary": summary,
        "overhead": {"gateway": overhead(summary, "gateway", "forwarder"),
                     "forwarder": overhead(summary, "forwarder", "mock"),
                     "gateway_vs_mock": overhead(summary, "gateway", "mock")},
    }]
    if not cfg.no_cache_check:
        log("base-url: cache hit vs miss on the gateway")
        hit_url = f"https://shop.example/bench/repeated-{uuid.uuid4().hex[:8]}.jpg"
        body = json.dumps({"url": hit_url})
        st = [http("POST", gw.url + "/detect", body.encode(), {"Content-Type": "application/json"}) for _ in range(2)]
        if st[1][1].get("x-cache") != "HIT":
            log(f"  the gateway does not cache (second answer: {st[1][0]}, x-cache {st[1][1].get('x-cache')}); skipped")
        else:
            cruns = []
            for rnd in range(cfg.rounds):
                for phase in rotate(["hit", "miss"], rnd):
                    load = (Load("detect hit", gw.url, "/detect", body=body) if phase == "hit" else
                            Load("detect miss", gw.url, "/detect", body=json.dumps({"url": IMAGE}), mode="unique"))
                    if mock:
                        r = cache_phase(cfg, gw, mock, load, cfg.connections, token)
                    else:
                        r = measure(cfg, load, cfg.connections)
                        r["upstream_calls_measured"] = None
                    r["round"], r["phase"], r["primed"] = rnd, phase, True
                    cruns.append(r)
            out.append(cache_result(cruns, cfg.connections, cfg.upstream_latency_ms))
    return out


# ---------------------------------------------------------------- report


def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    commit = dirty = None
    try:  # read-only git queries
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
        status = subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_gib": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version[0] if wrk_version else None,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "loadavg_at_start": os.getloadavg(),
        "git_commit": commit,
        "git_uncommitted_changes": dirty,
    }


def fmt(x, spec=".2f", signed=False):
    if x is None:
        return "-"
    return format(x, ("+" if signed else "") + spec)


def verdict(ok):
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def report(results: list[dict], cfg) -> list[dict]:
    """Prints the tables; returns the target checks."""
    checks = []
    for res in results:
        key = res["scenario"]
        title = {
            "a": f"(a) {res['connections']} connections, {res.get('upstream_latency_ms')} ms upstream, cache off",
            "b": f"(b) {res['connections']} connections in flight, {res.get('upstream_latency_ms')} ms upstream, cache off",
            "c": f"(c) cache on: /detect hit vs miss, {res['connections']} connections, {res.get('upstream_latency_ms')} ms upstream",
            "d": f"(d) no upstream work (CPU bound), {res['connections']} connections",
            "external": f"external targets, {res['connections']} connections, upstream {res.get('upstream_latency_ms')} ms (declared)",
        }[key]
        print(f"\n{title}  [medians of {cfg.rounds} round(s), {cfg.duration if key != 'd' else cfg.fast_duration} s each]")
        print(f"  {'target':<26}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'sock err':>9}{'bad st.':>8}"
              f"{'host CPU':>10}{'mock CPU':>10}{'wrk CPU':>9}")
        for name, s in res["summary"].items():
            print(f"  {name:<26}{fmt(s['rps'], '.1f'):>9}{fmt(s['p50_ms']):>9}{fmt(s['p99_ms']):>9}"
                  f"{fmt(s['max_ms'], '.1f'):>9}{s['socket_errors']:>9}{s['unexpected_status']:>8}"
                  f"{fmt(s.get('host_cpu_us_per_request'), '.0f'):>10}{fmt(s.get('mock_cpu_us_per_request'), '.0f'):>10}"
                  f"{fmt(s.get('wrk_cpu_us_per_request'), '.0f'):>9}")
        print("  (CPU: µs of user+system time per request: the serving test host, the mock, wrk)")
        if key in ("a", "b", "external"):
            for label, o in (("forwarder vs mock", res["overhead"]["forwarder"]),
                             ("gateway vs forwarder", res["overhead"]["gateway"]),
                             ("gateway vs mock", res["overhead"]["gateway_vs_mock"])):
                if o:
                    ratio = o["throughput_ratio"]
                    print(f"  {label:<24} p50 {fmt(o['p50_ms'], signed=True)} ms, p99 {fmt(o['p99_ms'], signed=True)} ms, "
                          f"throughput {fmt(ratio * 100 if ratio is not None else None, '.1f')} %")
            o = res["overhead"]["gateway"]
            if o:
                def rnd(x, n=3):
                    return None if x is None else round(x, n)
                checks.append({"scenario": key, "target": f"p50 overhead <= +{TARGET_P50_MS} ms vs forwarder",
                               "value": rnd(o["p50_ms"]), "met": o["p50_ms"] is not None and o["p50_ms"] <= TARGET_P50_MS})
                checks.append({"scenario": key, "target": f"p99 overhead <= +{TARGET_P99_MS} ms vs forwarder",
                               "value": rnd(o["p99_ms"]), "met": o["p99_ms"] is not None and o["p99_ms"] <= TARGET_P99_MS})
                checks.append({"scenario": key, "target": f"throughput >= {TARGET_THROUGHPUT:.0%} of forwarder",
                               "value": rnd(o["throughput_ratio"], 4),
                               "met": o["throughput_ratio"] is not None and o["throughput_ratio"] >= TARGET_THROUGHPUT})
            if key == "b" or (key == "external" and res["connections"] >= 1000):
                for name, s in res["summary"].items():
                    errs = s["socket_errors"] + s["unexpected_status"]
                    checks.append({"scenario": key, "target": f"0 errors with {res['connections']} in flight: {name}",
                                   "value": f"{errs} errors in {s['requests']} requests",
                                   "met": errs == 0 and s["requests"] > 0})
        if key == "c":
            c = res["cache"]
            hs, ms = res["summary"].get("detect hit"), res["summary"].get("detect miss")
            if hs and ms:
                print(f"  hit vs miss               p50 {fmt(hs['p50_ms'] - ms['p50_ms'], signed=True)} ms, "
                      f"throughput x{fmt(hs['rps'] / ms['rps'] if ms['rps'] else None, '.1f')}")
            print(f"  upstream calls during the hit runs: {c['hit_upstream_calls']} (mock's credit counter); "
                  f"all hits said x-cache: HIT: {c['hit_all_x_cache_hit']}; all misses MISS: {c['miss_all_x_cache_miss']}")
            checks.append({"scenario": "c", "target": "cache hit served without an upstream call",
                           "value": c["hit_upstream_calls"], "met": c["hit_without_upstream_call"]})
            checks.append({"scenario": "c", "target": "cache hit faster than a miss (p50 and req/s)",
                           "value": (f"p50 {hs['p50_ms']:.2f} vs {ms['p50_ms']:.2f} ms, {hs['rps']:.0f} vs {ms['rps']:.0f} req/s"
                                     if hs and ms else None),
                           "met": c["hit_faster"]})
        if key == "d":
            s = res["summary"]
            base = s.get("fwd var probe")
            if base and base.get("host_cpu_us_per_request"):
                b = base["host_cpu_us_per_request"]
                print("  host CPU per request minus that of 'fwd var probe' (one variable read, nothing else):")
                for name, v in s.items():
                    if name != "fwd var probe" and v.get("host_cpu_us_per_request") is not None:
                        print(f"    {name:<28}{fmt(v['host_cpu_us_per_request'] - b, '.0f', True):>8} µs")
    if checks:
        print("\nDESIGN §6 targets" + ("  (quick mode: smoke test, the numbers mean nothing)" if cfg.quick else ""))
        for c in checks:
            print(f"  [{verdict(c['met']):>6}] ({c['scenario']}) {c['target']}: {c['value']}")
    return checks


# ---------------------------------------------------------------- main


def preflight(cfg) -> Path | None:
    missing = []
    if not shutil.which("wrk"):
        missing.append("wrk (the load generator): apt-get install -y wrk")
    if not LUA.exists():
        missing.append(f"{LUA}")
    host_bin = None
    if not cfg.base_url:
        host_bin = Path(cfg.host_bin) if cfg.host_bin else ROOT / "target" / "release" / "spin-test-host"
        if not host_bin.exists():
            missing.append(f"{host_bin}: cargo build --release -p spin-test-host")
        wasm = [c for c in COMPONENTS if not (WASM_DIR / f"{c}.wasm").exists()]
        if wasm:
            missing.append("components " + ", ".join(wasm) + ": cargo build --target wasm32-wasip2 --release "
                           + " ".join(f"-p {c}" for c in COMPONENTS))
    if missing:
        die("missing:\n  " + "\n  ".join(missing))
    return host_bin


def raise_nofile(need: int) -> int:
    """Raises this process's open-file limit (inherited by everything it starts) towards `need`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 round, 2 s per target (CI; not for numbers)")
    ap.add_argument("--scenarios", default="a,b,c,d", help="subset of a,b,c,d (default all)")
    ap.add_argument("--rounds", type=int, help="rounds per target, interleaved (default 3)")
    ap.add_argument("--duration", type=int, help="measured seconds per run (default 10)")
    ap.add_argument("--warmup", type=int, help="warm-up seconds before each run (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--timeout", type=int, default=10, help="wrk's per-request timeout in s; longer counts as an error (default 10)")
    ap.add_argument("--host-bin", help="spin-test-host binary (default target/release/spin-test-host)")
    ap.add_argument("--out", help="JSON result file (default bench/results/bench-<time>.json)")
    ap.add_argument("--strict", action="store_true", help="exit 3 when a DESIGN §6 target is missed")
    ap.add_argument("--gateway-manifest", default=str(ROOT / "spin.toml"),
                    help="the gateway's spin.toml (default the repository's; e.g. a patched build's, for experiments)")
    ap.add_argument("--keep-logs", action="store_true", help="keep the processes' output (under bench/results/)")
    ext = ap.add_argument_group("already-running gateway")
    ext.add_argument("--base-url", help="measure this gateway instead of starting the test host")
    ext.add_argument("--forwarder-url", help="a running bench/forwarder (baseline)")
    ext.add_argument("--mock-url", help="the mock Ximilar the gateway uses (zero-gateway baseline and call counting)")
    ext.add_argument("--token", help=f"the mock's token (default {TOKEN})")
    ext.add_argument("--connections", type=int, default=64, help="connections in --base-url mode (default 64)")
    ext.add_argument("--upstream-latency-ms", type=int, help="the mock's latency, for the report only")
    ext.add_argument("--no-cache-check", action="store_true", help="skip the hit-vs-miss run in --base-url mode")
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
    if any(s not in "abcd" for s in scenarios):
        die(f"--scenarios: expected a subset of a,b,c,d, got {cfg.scenarios}")

    host_bin = preflight(cfg)
    # 1,000 connections: wrk holds 1,000 sockets, the host 1,000 in and up to 1,000 out.
    cfg.b_connections = 1000
    need = 4096 if ("b" in scenarios or (cfg.base_url and cfg.connections >= 500)) else 1024
    got = raise_nofile(need)
    if got < need:
        if cfg.quick and not cfg.base_url:
            cfg.b_connections = max(64, (got - 256) // 3)
            log(f"open-file limit {got} (< {need}): the quick run uses {cfg.b_connections} connections in (b)")
        else:
            die(f"open-file limit is {got} and cannot be raised to {need} (hard limit); 1,000 connections need it: "
                f"raise it (ulimit -Hn / LimitNOFILE) or leave out scenario b (--scenarios a,c,d)")

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
                results.append(scenario_overhead(cfg, host, "a", 64, 50))
            if "b" in scenarios:
                results.append(scenario_overhead(cfg, host, "b", cfg.b_connections, 300))
            if "c" in scenarios:
                results.append(scenario_cache(cfg, host, 64, 50))
            if "d" in scenarios:
                results.append(scenario_fastpath(cfg, host, 16))
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
        "note": ("test host (tests/host, wasmtime 44), not Spin; DESIGN §6's forwarder numbers were measured on Spin 4.0.2"
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
