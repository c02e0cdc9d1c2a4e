"""The load: one wrk run per target, measured runs, and the small HTTP helpers."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import time
import urllib.error
import urllib.request
import uuid

from .common import ACCOUNT_PATH, LUA, log
from .procs import cpu_seconds, settle


# ---------------------------------------------------------------- wrk


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


def log_run(name: str, connections: int, r: dict, extra: str = "") -> None:
    cpu = "  ".join(f"{k} CPU {v:.0f} µs/req" for k, v in r.get("cpu_us_per_request", {}).items() if v is not None)
    log(f"  {name:<26} c={connections:<5} {r['rps']:9.1f} req/s  p50 {r['p50_ms']:8.2f} ms  "
        f"p99 {r['p99_ms']:8.2f} ms  sock err {r['socket_errors']}  bad status {r['unexpected_status']}  {cpu}{extra}")


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
