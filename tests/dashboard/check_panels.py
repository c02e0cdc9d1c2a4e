#!/usr/bin/env python3
"""Evaluates every query of the Grafana dashboard against a real Prometheus
scraping a real gateway.

    python3 tests/dashboard/check_panels.py [--dashboard FILE] [--keep]

Starts, all on free loopback ports and in a temporary directory:
  - the mock Ximilar and the image host of the test host (target/release/spin-test-host);
  - a small fault proxy (below) between the gateway and the mock, which answers 503
    once to any call whose body contains FAULT_MARK, so the gateway retries;
  - the gateway itself (`spin-test-host serve` on spin.toml) with two caller keys
    and crop mode on;
  - Debian's Prometheus server (`prometheus`, package `prometheus`) scraping the
    gateway's /metrics every second as job "ximilar-gw", with its own storage.
Then it sends traffic (detect, tag, search in crop mode, a cache hit, identical
requests at once for coalescing, a retry, a 4xx, /health), waits for a few
scrapes, and runs every target expression of every panel through Prometheus's
/api/v1/query. Each must parse and return at least one sample, except in panels
whose description carries EMPTY_UNTIL_FAULT: those must parse and may be empty
(breaker rejections, say, need Ximilar to fail for real). Every metric name a
query selects must also be one src/metrics.rs defines, in those panels too.

Grafana's variables are replaced before a query is sent: $__rate_interval and
$__interval by RATE_WINDOW, $__range by RANGE_WINDOW, a dashboard variable by its
current value. Every process it starts is stopped (SIGTERM/SIGINT, then SIGKILL)
on success, failure or Ctrl-C; the whole run is bounded by DEADLINE_S.
Exits 0 when every query passes; the last line reads `dashboard checks: N passed, M failed`.
Needs: python3 (stdlib), the built test host and components, `prometheus` on PATH.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "ximilar-gw.json"
HOST_BIN = ROOT / "target" / "release" / "spin-test-host"
EMPTY_UNTIL_FAULT = "[empty until a fault]"
FAULT_MARK = "fault-once"
TOKEN = "dashboard-check-token"
COLLECTION = "dashboard-check-collection"
CALLERS = {"orch": "orch-key-0123456789abcdef", "shop": "shop-key-0123456789abcdef"}
RATE_WINDOW = "5m"   # covers the whole run: every counter has its first and last scrape in it
RANGE_WINDOW = "1h"
DEADLINE_S = 240
SCRAPES_WANTED = 4


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------ processes


class Proc:
    """A process this script started, stopped by its own pid only."""

    def __init__(self, name: str, cmd: list[str], workdir: Path, env: dict[str, str]):
        self.name = name
        self.cmd = cmd
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                      cwd=workdir, env=env, start_new_session=True)

    def wait_for(self, pattern: str, timeout: float, in_stderr: bool = False) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = regex.search((self.err if in_stderr else self.out).read_text(errors="replace"))
            if m:
                return m.group(1).rstrip("/")
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start ({' '.join(self.cmd)}):\n"
                           + self.err.read_text(errors="replace")[-2000:])

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)


class FaultProxy:
    """Forwards every call to the mock Ximilar, except the first call whose body holds
    FAULT_MARK, which gets 503 (the gateway retries 503). Loopback only."""

    def __init__(self, upstream: str):
        target = urllib.parse.urlsplit(upstream)
        faulted: set[bytes] = set()
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if FAULT_MARK.encode() in body:
                    with lock:
                        first = body not in faulted
                        faulted.add(body)
                    if first:
                        self._answer(503, [("Content-Type", "application/json")], b'{"detail": "injected"}')
                        return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    self._answer(resp.status, resp.getheaders(), resp.read())
                finally:
                    conn.close()

            do_GET = do_POST = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ HTTP


def call(base: str, method: str, path: str, body: dict | None = None, key: str | None = None,
         timeout: float = 30) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def get_json(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def traffic(gw: str, images: str) -> list[str]:
    """Requests that make every family of /metrics show up; returns what went wrong."""
    orch, shop = CALLERS["orch"], CALLERS["shop"]
    problems = []

    def want(what: str, status: int, ok) -> None:
        if not ok(status):
            problems.append(f"{what}: unexpected status {status}")

    two = lambda s: 200 <= s < 300  # noqa: E731
    want("health", call(gw, "GET", "/health"), two)
    want("detect", call(gw, "POST", "/detect", {"url": "https://shop.example/a.jpg"}, orch), two)
    want("detect again (cache hit)", call(gw, "POST", "/detect", {"url": "https://shop.example/a.jpg"}, orch), two)
    want("tag", call(gw, "POST", "/tag", {"url": "https://shop.example/b.jpg"}, shop), two)
    want("search (crop mode)", call(gw, "POST", "/search", {
        "crop_url": f"{images}/photo-1200x1600.jpg#xywh=212,340,493,782", "top_k": 3}, orch), two)
    want("search (crop mode) again", call(gw, "POST", "/search", {
        "crop_url": f"{images}/photo-800x1000.jpg#xywh=10,20,300,400", "top_k": 3}, shop), two)
    want("detect with a retry", call(gw, "POST", "/detect", {"url": f"https://shop.example/{FAULT_MARK}.jpg"}, orch), two)
    want("malformed body (4xx)", call(gw, "POST", "/detect", {"nope": 1}, orch), lambda s: 400 <= s < 500)
    want("no key (4xx)", call(gw, "POST", "/detect", {"url": "https://shop.example/a.jpg"}), lambda s: 400 <= s < 500)
    # Identical requests at once: one asks Ximilar (slow mock), the others wait for it.
    body = {"url": "https://shop.example/together.jpg"}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        for s in pool.map(lambda _: call(gw, "POST", "/detect", body, orch), range(6)):
            want("coalesced detect", s, two)
    want("health again", call(gw, "GET", "/health"), two)
    return problems


# ------------------------------------------------------------------ dashboard


def panels(dashboard: dict):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def variables(dashboard: dict) -> dict[str, str]:
    out = {}
    for var in dashboard.get("templating", {}).get("list", []):
        current = (var.get("current") or {}).get("value", var.get("query", ""))
        out[var["name"]] = str(current[0] if isinstance(current, list) and current else current)
    return out


def expand(expr: str, values: dict[str, str]) -> str:
    builtins = {"__rate_interval": RATE_WINDOW, "__interval": RATE_WINDOW, "__range": RANGE_WINDOW}
    table = {**values, **builtins}

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in table:
            raise KeyError(f"unknown dashboard variable ${name}")
        return table[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


def known_series() -> set[str]:
    """The series names src/metrics.rs defines (histograms with _bucket, _sum, _count), and up."""
    names = set(re.findall(r'pub const [A-Z_]+: &str = "([a-z_:][a-z0-9_:]*)";', (ROOT / "src" / "metrics.rs").read_text()))
    return {"up"} | names | {n + s for n in names for s in ("_bucket", "_sum", "_count")}


def selected_series(expr: str) -> set[str]:
    """Metric names an expression selects with a label matcher, e.g. x{job="..."}."""
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr))


def queries(dashboard: dict):
    """(panel title, refId, expression, may be empty) for every Prometheus target."""
    for panel in panels(dashboard):
        if panel.get("type") == "row":
            continue
        may_be_empty = EMPTY_UNTIL_FAULT in (panel.get("description") or "")
        for target in panel.get("targets", []):
            if target.get("expr") is not None:
                yield panel.get("title", "?"), target.get("refId", "?"), target["expr"], may_be_empty


# ------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dashboard", type=Path, default=DASHBOARD, help="dashboard JSON (default: %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, scrapes)")
    args = ap.parse_args()

    started = time.monotonic()
    dashboard = json.loads(args.dashboard.read_text())
    todo = list(queries(dashboard))
    if not todo:
        log(f"FAIL  {args.dashboard} has no Prometheus targets")
        return 1
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        log("FAIL  prometheus is not on PATH (apt-get install -y prometheus)")
        return 1
    if not HOST_BIN.is_file():
        log(f"FAIL  {HOST_BIN} is missing: cargo build --release -p spin-test-host")
        return 1

    workdir = Path(tempfile.mkdtemp(prefix="xgw-dashboard-"))
    # Hermetic: the gateway's env provider must not see this shell's XIMILAR_* settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XIMILAR_", "SPIN_VARIABLE_", "OTEL_"))}
    procs: list[Proc] = []
    proxy: FaultProxy | None = None

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # Bounded: whatever hangs, the alarm ends the run and the finally block cleans up.
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError(f"over {DEADLINE_S} s")))
    signal.alarm(DEADLINE_S)
    passed = failed = 0
    try:
        mock = Proc("mock", [str(HOST_BIN), "mock", "--listen", "127.0.0.1:0", "--latency-ms", "300",
                             "--token", TOKEN, "--collection-id", COLLECTION], workdir, env)
        procs.append(mock)
        mock_url = mock.wait_for(r"mock Ximilar listening on (http://\S+)", 60)
        images = Proc("images", [str(HOST_BIN), "images", "--listen", "127.0.0.1:0"], workdir, env)
        procs.append(images)
        images_url = images.wait_for(r"image host listening on (http://\S+)", 60)
        proxy = FaultProxy(mock_url)

        (workdir / "runtime-config.toml").write_text((ROOT / "runtime-config.toml").read_text())
        keys = ",".join(f"{name}:{key}:5000" for name, key in CALLERS.items())
        gw = Proc("gateway", [
            str(HOST_BIN), "serve", "--manifest", str(ROOT / "spin.toml"),
            "--runtime-config-file", str(workdir / "runtime-config.toml"), "--listen", "127.0.0.1:0",
            "--variable", f"api_url={proxy.url}", "--variable", f"api_token={TOKEN}",
            "--variable", f"collection_id={COLLECTION}", "--variable", f"inbound_keys={keys}",
            "--variable", "search_crop=true", "--variable", f"image_host_a={images_url}",
            "--variable", "backoff_base_ms=20", "--variable", "backoff_max_ms=100",
        ], workdir, env)
        procs.append(gw)
        gw_url = gw.wait_for(r"serving on (http://\S+)", 120)
        log(f"gateway on {gw_url}, mock Ximilar behind the fault proxy {proxy.url}, images on {images_url}")

        problems = traffic(gw_url, images_url)
        for p in problems:
            failed += 1
            log(f"FAIL  traffic: {p}")
        (workdir / "metrics.txt").write_text(urllib.request.urlopen(gw_url + "/metrics", timeout=10).read().decode())

        port = free_port()
        target = urllib.parse.urlsplit(gw_url).netloc
        (workdir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: ximilar-gw\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
            f"    static_configs:\n      - targets: ['{target}']\n")
        prom = Proc("prometheus", [
            prometheus, f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h", "--web.enable-lifecycle",
        ], workdir, env)
        procs.append(prom)
        prom_url = f"http://127.0.0.1:{port}"
        prom.wait_for(r"(Server is ready to receive web requests)", 60, in_stderr=True)

        def query(expr: str) -> dict:
            url = f"{prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                return get_json(url)
            except urllib.error.HTTPError as e:  # 400 for a query that does not parse
                return json.loads(e.read() or b"{}") or {"status": "error", "error": str(e)}

        # Scrapes of the traffic above, then one more request so rates see a change.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = query('count_over_time(up{job="ximilar-gw"}[5m])')
            n = int(float(r["data"]["result"][0]["value"][1])) if r.get("data", {}).get("result") else 0
            if n >= SCRAPES_WANTED:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("Prometheus did not scrape the gateway: " + (workdir / "prometheus.err").read_text()[-1500:])
        up = query('up{job="ximilar-gw"}')["data"]["result"]
        if not up or up[0]["value"][1] != "1":
            raise RuntimeError(f"the gateway's scrape is not up: {up}")
        call(gw_url, "POST", "/detect", {"url": "https://shop.example/late.jpg"}, CALLERS["orch"])
        call(gw_url, "GET", "/health")
        time.sleep(2.5)  # two more scrapes

        values = variables(dashboard)
        known = known_series()
        for title, ref, expr, may_be_empty in todo:
            name = f"{title} [{ref}]"
            unknown = selected_series(expr) - known
            if unknown:  # caught even in a panel that may stay empty
                failed += 1
                log(f"FAIL  {name}: series not in src/metrics.rs: {sorted(unknown)}")
                continue
            try:
                expanded = expand(expr, values)
            except KeyError as e:
                failed += 1
                log(f"FAIL  {name}: {e}")
                continue
            r = query(expanded)
            if r.get("status") != "success":
                failed += 1
                log(f"FAIL  {name}: does not parse: {r.get('error')}\n      {expanded}")
            elif not r["data"]["result"] and not may_be_empty:
                failed += 1
                log(f"FAIL  {name}: no data (a metric or label the gateway does not emit?)\n      {expanded}")
            else:
                passed += 1
                n = len(r["data"]["result"])
                log(f"ok    {name}: {n} series" + (" (may be empty until a fault)" if may_be_empty and not n else ""))
    except (Exception, KeyboardInterrupt) as e:
        failed += 1
        log(f"FAIL  {type(e).__name__}: {e}")
    finally:
        signal.alarm(0)
        for p in reversed(procs):
            p.stop(signal.SIGTERM if p.name == "prometheus" else signal.SIGINT)
        if proxy is not None:
            proxy.stop()
        if args.keep or failed:
            log(f"(logs and the last /metrics in {workdir})")
        if not args.keep and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
    log(f"({time.monotonic() - started:.1f} s, {len(todo)} queries of {args.dashboard.name})")
    log(f"dashboard checks: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
