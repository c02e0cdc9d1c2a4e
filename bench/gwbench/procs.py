"""The processes a benchmark starts or measures, and their CPU time."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import time
import types
from pathlib import Path

from .common import BENCH, COLLECTION, COMPONENTS, DETECT_PATH, LUA, ROOT, TOKEN, WASM_DIR, die


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

    def images(self) -> Proc:
        """The loopback image host of crop mode (generated photos /photo-<W>x<H>.jpg)."""
        return self._start("images", ["images", "--listen", "127.0.0.1:0"], r"image host listening on (http://\S+)")

    def gateway(self, mock: Proc, cache_ttl_s: int, runtime_config: str = "default",
                variables: dict[str, str] | None = None) -> Proc:
        # A fresh copy per start, in its own folder: a store `path` is relative to the
        # runtime config (as in Spin), so every gateway starts with empty stores.
        rc_dir = self.workdir / f"{self.seq + 1:03d}-state"
        rc_dir.mkdir()
        rc = rc_dir / "runtime-config.toml"
        rc.write_text(runtime_config_text(runtime_config))
        return self._start("gateway", [
            "serve", "--manifest", str(self.gateway_manifest),
            "--runtime-config-file", str(rc), "--listen", "127.0.0.1:0",
            "--variable", f"api_url={mock.url}",
            "--variable", f"api_token={TOKEN}",
            "--variable", f"collection_id={COLLECTION}",
            "--variable", f"cache_ttl_s={cache_ttl_s}",
            *[a for k, v in (variables or {}).items() for a in ("--variable", f"{k}={v}")],
        ], r"serving on (http://\S+)")

    def stop(self, *procs: Proc) -> None:
        for p in procs:
            if p is not None and p in self.live:
                p.stop()
                self.live.remove(p)

    def stop_all(self) -> None:
        self.stop(*list(reversed(self.live)))


class External:
    """Stands in for Proc when the target is already running; given its pid (e.g. a real
    `spin up`), the benchmark reads its CPU time per request from /proc as it does for the
    processes it starts."""

    def __init__(self, url, pid: int | None = None):
        self.url = url
        self.p = types.SimpleNamespace(pid=pid) if pid else None


# ---------------------------------------------------------------- runtime configs


# The runtime configurations a gateway can be measured with on the test host, whose
# key-value model is Spin's SQLite store (tests/host/src/kv/sqlite.rs) and whose SQLite
# databases are modelled on Spin's (tests/host/src/sqlite_db/). Redis is not modelled
# there: measure it on a real `spin up` with --base-url. Each entry replaces the key-value
# stores of runtime-config.toml (None: the file as it is); `sqlite` keeps them and moves
# the state into the database instead.
RUNTIME_CONFIGS = {
    "default": None,  # the repository's runtime-config.toml
    "memory": {"cache": {}, "metrics": {}},
    "file": {"cache": {"path": ".spin/cache.db"}, "metrics": {}},
    "sqlite": None,
}

# A variables provider ahead of the env provider wins: it sets state_store for `sqlite`.
STATE_IN_DATABASE = '[[variables_provider]]\ntype = "static"\nvalues = { state_store = "sqlite" }\n\n'


def runtime_config_text(name: str) -> str:
    if name not in RUNTIME_CONFIGS:
        die(f"unknown runtime config {name!r}: one of {', '.join(RUNTIME_CONFIGS)}")
    text = (ROOT / "runtime-config.toml").read_text()
    if name == "sqlite":
        return STATE_IN_DATABASE + text
    stores = RUNTIME_CONFIGS[name]
    if stores is None:
        return text
    # Keep the variables providers and the database; replace the key-value stores.
    head, rest = text.split("[key_value_store.", 1)
    database = rest[rest.index("[sqlite_database."):]
    for label, options in stores.items():
        head += f'\n[key_value_store.{label}]\ntype = "spin"\n'
        head += "".join(f'{k} = "{v}"\n' for k, v in options.items())
    return head + "\n" + database


def gateway_target(runtime_config: str) -> str:
    return "gateway" if runtime_config == "default" else f"gateway[{runtime_config}]"


# ---------------------------------------------------------------- CPU time, limits, preflight


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def cpu_reading(pid: int) -> tuple[float | None, dict[str, int]]:
    """A process's CPU time now, for `cpu_between`: its user + system ticks (10 ms steps) and
    each live thread's time on a CPU in nanoseconds (`/proc/<pid>/task/<tid>/schedstat`)."""
    threads = {}
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                threads[task.name] = int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                pass
    except OSError:
        pass
    return cpu_seconds(pid), threads


def cpu_between(before: tuple[float | None, dict[str, int]], after: tuple[float | None, dict[str, int]]) -> float | None:
    """Seconds of CPU between two readings: to the nanosecond from the threads' own clocks when
    every thread of the first reading is still there (a thread's time leaves with it), else from
    the ticks, whose 10 ms steps are coarse for a single request."""
    (ticks0, threads0), (ticks1, threads1) = before, after
    if threads0 and threads1 and threads0.keys() <= threads1.keys():
        return sum(ns - threads0.get(tid, 0) for tid, ns in threads1.items()) / 1e9
    if ticks0 is None or ticks1 is None:
        return None
    return ticks1 - ticks0


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


def preflight(cfg) -> Path | None:
    """Dies (exit 2) naming whatever the benchmark needs and cannot find; returns the test
    host binary (None in --base-url mode)."""
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
