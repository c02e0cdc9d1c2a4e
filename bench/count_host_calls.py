#!/usr/bin/env python3
"""Counts what one request makes the test host do: host calls of the gateway and the forwarder.

Linux perf uprobes on spin-test-host's own functions (needs root, `perf`, `nm` and `readelf`,
and a spin-test-host built with symbols: the release profile strips only debuginfo):

  stderr_write   wasi:io output-stream write on stdout/stderr (the log line)
  stderr_check   wasi:io check-write on stdout/stderr
  kv_increment   wasi:keyvalue/atomics increment (metrics counters, the cache's write counter)
  kv_open        wasi:keyvalue/store open
  kv_get, kv_set the in-memory store's get / set (spin:key-value and wasi:keyvalue alike)
  var_get        spin:variables get
  new_instance   a new store + instance (Spin reuses one for up to 128 requests)

Each case sends N sequential requests (so instances are reused as Spin would) and prints the
counts per request. The probes are removed at the end.

  sudo python3 bench/count_host_calls.py [-n 256]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gwbench.common import ROOT  # noqa: E402
from gwbench.load import records_body  # noqa: E402
from gwbench.procs import Host, preflight  # noqa: E402
from gwbench.report import fmt  # noqa: E402

PROBES = {
    "stderr_write": r"AsyncWriteStream\$u20\$as\$u20\$wasmtime_wasi_io\.\.streams\.\.OutputStream\$GT\$5write17h",
    "stderr_check": r"AsyncWriteStream\$u20\$as\$u20\$wasmtime_wasi_io\.\.streams\.\.OutputStream\$GT\$11check_write17h",
    "kv_increment": r"spin_test_host\.\.kv\.\.KvAccess\$u20\$as\$u20\$spin_test_host\.\.bindings\.\.wasi\.\.keyvalue\.\.atomics\.\.Host\$GT\$9increment17h",
    "kv_open": r"spin_test_host\.\.kv\.\.KvAccess\$u20\$as\$u20\$spin_test_host\.\.bindings\.\.wasi\.\.keyvalue\.\.store\.\.Host\$GT\$4open17h",
    "kv_get": r"^_ZN14spin_test_host2kv7KvStore3get17h",
    "kv_set": r"^_ZN14spin_test_host2kv7KvStore3set17h",
    "var_get": r"^_ZN14spin_test_host9variables18ComponentVariables3get17h",
    "new_instance": r"spin_test_host\.\.server\.\.ComponentHost\$u20\$as\$u20\$wasmtime_wasi_http\.\.handler\.\.HandlerState\$GT\$9new_store17h",
}
GROUP = "ximilar_bench"


def file_offsets(binary: Path) -> dict[str, int]:
    """Symbol → file offset (perf probe -x wants offsets for raw addresses)."""
    segs = []
    for line in subprocess.run(["readelf", "-lW", str(binary)], capture_output=True, text=True, check=True).stdout.splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            segs.append((int(f[2], 16), int(f[1], 16), int(f[4], 16)))  # vaddr, offset, filesz
    syms = subprocess.run(["nm", str(binary)], capture_output=True, text=True, check=True).stdout.splitlines()
    out = {}
    for name, pattern in PROBES.items():
        rx = re.compile(pattern)
        hits = [s.split() for s in syms if len(s.split()) == 3 and s.split()[1] in "Tt" and rx.search(s.split()[2])]
        if len(hits) != 1:
            raise SystemExit(f"symbol for {name}: {len(hits)} matches (pattern {pattern})")
        vaddr = int(hits[0][0], 16)
        for sv, so, sz in segs:
            if sv <= vaddr < sv + sz:
                out[name] = vaddr - sv + so
    return out


def count(pid: int, cases: list[tuple[str, str, str, str | None]], n: int) -> None:
    events = ",".join(f"{GROUP}:{name}" for name in PROBES)
    for label, url, method, body in cases:
        code = f"""
import urllib.request, urllib.error
for i in range({n}):
    b = {body!r}
    data = b.replace("{{n}}", str(i)).encode() if b is not None else None
    req = urllib.request.Request({url!r}, data=data, method={method!r}, headers={{"Content-Type": "application/json"}})
    try:
        urllib.request.urlopen(req, timeout=30).read()
    except urllib.error.HTTPError as e:
        e.read()
"""
        res = subprocess.run(["perf", "stat", "-x,", "-e", events, "-p", str(pid), "--", sys.executable, "-c", code],
                             capture_output=True, text=True)
        counts = {}
        for line in res.stderr.splitlines():
            f = line.split(",")
            if len(f) > 2 and f[2].startswith(GROUP + ":"):
                counts[f[2].split(":", 1)[1]] = int(f[0]) / n if f[0].isdigit() else None
        print(f"  {label:<48}" + "".join(f"{fmt(counts.get(k), '.2f'):>14}" for k in PROBES))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=256, help="requests per case (default 256)")
    cfg = ap.parse_args()
    cfg.quick, cfg.base_url, cfg.host_bin = False, None, None
    host_bin = preflight(cfg)
    offsets = file_offsets(host_bin)
    subprocess.run(["perf", "probe", "-q", "-d", f"{GROUP}:*"], capture_output=True)
    for name, off in offsets.items():
        subprocess.run(["perf", "probe", "-q", "-x", str(host_bin), "-a", f"{GROUP}:{name}=0x{off:x}"], check=True)
    workdir = Path(tempfile.mkdtemp(prefix="ximilar-gw-count-"))
    host = Host(host_bin, workdir, ROOT / "spin.toml")
    try:
        mock = host.mock(0)
        gw_off = host.gateway(mock, cache_ttl_s=0)
        gw_on = host.gateway(mock, cache_ttl_s=3600)
        fwd = host.forwarder(mock)
        detect = json.dumps({"url": "https://shop.example/count/{n}.jpg"})
        print(f"per request, {cfg.n} sequential requests per case")
        print(f"  {'case':<48}" + "".join(f"{k:>14}" for k in PROBES))
        count(gw_off.p.pid, [("gateway POST /detect, cache off", gw_off.url + "/detect", "POST", detect),
                             ("gateway POST /detect {} (422)", gw_off.url + "/detect", "POST", "{}"),
                             ("gateway GET /detect (405)", gw_off.url + "/detect", "GET", None),
                             ("gateway GET /metrics", gw_off.url + "/metrics", "GET", None)], cfg.n)
        count(gw_on.p.pid, [("gateway POST /detect, cache on, misses", gw_on.url + "/detect", "POST", detect),
                            ("gateway POST /detect, cache on, one URL (hits)", gw_on.url + "/detect", "POST",
                             json.dumps({"url": "https://shop.example/count/1.jpg"}))], cfg.n)
        count(fwd.p.pid, [("forwarder forward", fwd.url + "/detect", "POST", records_body("https://shop.example/{n}.jpg")),
                          ("forwarder variable probe", fwd.url + "/_test/var/upstream_path", "GET", None)], cfg.n)
    finally:
        host.stop_all()
        subprocess.run(["perf", "probe", "-q", "-d", f"{GROUP}:*"], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
