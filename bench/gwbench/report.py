"""The report: medians across rounds, overheads, the machine, the tables and the target checks."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
from pathlib import Path

from .common import ROOT, TARGET_P50_MS, TARGET_P99_MS, TARGET_THROUGHPUT


# ---------------------------------------------------------------- summaries


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
        # Host CPU per request against the baseline's (steadier than latency on a shared machine).
        "host_cpu_ratio": (g["host_cpu_us_per_request"] / b["host_cpu_us_per_request"]
                           if g.get("host_cpu_us_per_request") and b.get("host_cpu_us_per_request") else None),
    }


# ---------------------------------------------------------------- machine and tables


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


def report_coalescing(res: dict) -> list[dict]:
    """(f): one upstream call per burst, and how long followers wait beyond the first answer."""
    print(f"\n(f) coalescing: {res['bursts']} bursts of {res['connections']} identical /detect at once, "
          f"{res['upstream_latency_ms']} ms upstream")
    print(f"  upstream calls per burst: {res['upstream_calls_per_burst']}; non-200 answers: {res['non_200']}")
    print(f"  first answer of a burst p50 {fmt(res['first_answer_p50_ms'])} ms; the other callers later by "
          f"p50 {fmt(res['follower_extra_p50_ms'])} ms, p90 {fmt(res['follower_extra_p90_ms'])} ms")
    calls = res["upstream_calls_per_burst"]
    return [
        {"scenario": "f", "target": "one upstream call per burst of identical requests",
         "value": calls, "met": bool(calls) and all(c == 1 for c in calls) and res["non_200"] == 0},
        {"scenario": "f", "target": "followers answered <= 25 ms after the first answer (p50)",
         "value": res["follower_extra_p50_ms"],
         "met": res["follower_extra_p50_ms"] is not None and res["follower_extra_p50_ms"] <= 25},
    ]


def report_crop(res: dict) -> list[dict]:
    """(g): what crop mode's image step costs per /search."""
    print(f"\n(g) crop mode: {res['searches']} /search of a new box and {res['searches']} of the whole photo "
          f"({res['photo']}), alternating, one at a time, upstream answering at once")
    step = res["on_p50_ms"] - res["off_p50_ms"] if res["on_p50_ms"] is not None and res["off_p50_ms"] else None
    print(f"  /search p50: whole photo (URL sent) {fmt(res['off_p50_ms'])} ms, box (crop mode) "
          f"{fmt(res['on_p50_ms'])} ms (p90 {fmt(res['on_p90_ms'])} ms): the step {fmt(step, signed=True)} ms; "
          f"non-200: {res['non_200']}")
    if res["crop_p50_ms"] is not None:
        print(f"  inside the component: download p50 {fmt(res['fetch_p50_ms'])} ms; "
              f"decode + crop + encode p50 {fmt(res['crop_p50_ms'])} ms, p90 {fmt(res['crop_p90_ms'])} ms")
    outfit = res.get("outfit_cpu_ms_p50") or {}
    one, three = outfit.get("one garment"), outfit.get("detect + 3 garments")
    if one and three:
        paired = outfit.get("outfit / one garment, median of rounds")
        print(f"  gateway CPU per new photo, p50: one garment {fmt(one)} ms; /detect + a search of each of "
              f"its 3 garments {fmt(three)} ms ({three / one:.2f}x; median of the rounds' ratios "
              f"{fmt(paired, '.2f')}x)")
    return [{"scenario": "g", "target": "every crop-mode search answered", "value": res["non_200"],
             "met": res["non_200"] == 0 and res["on_p50_ms"] is not None}]


def report(results: list[dict], cfg) -> list[dict]:
    """Prints the tables; returns the target checks."""
    checks = []
    for res in results:
        key = res["scenario"]
        if key == "f":
            checks += report_coalescing(res)
            continue
        if key == "g":
            checks += report_crop(res)
            continue
        title = {
            "a": f"(a) {res['connections']} connections, {res.get('upstream_latency_ms')} ms upstream, every request a cache miss",
            "b": f"(b) {res['connections']} connections, {res.get('upstream_latency_ms')} ms upstream, every request a cache miss",
            "e": f"(e) {res['connections']} connections in flight, {res.get('upstream_latency_ms')} ms upstream, every request a cache miss",
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
        if key in ("a", "b", "e", "external"):
            for name, o in res["overhead"].items():
                if o:
                    ratio = o["throughput_ratio"]
                    print(f"  {name + ' vs ' + o['vs']:<30} p50 {fmt(o['p50_ms'], signed=True)} ms, "
                          f"p99 {fmt(o['p99_ms'], signed=True)} ms, throughput {fmt(ratio * 100 if ratio is not None else None, '.1f')} %, "
                          f"host CPU per request x{fmt(o.get('host_cpu_ratio'), '.2f')}")

            def rnd(x, n=3):
                return None if x is None else round(x, n)
            for name, o in res["overhead"].items():
                if not o or name == "forwarder" or key == "e":
                    continue
                checks.append({"scenario": key, "target": f"{name}: p50 overhead <= +{TARGET_P50_MS} ms vs forwarder",
                               "value": rnd(o["p50_ms"]), "met": o["p50_ms"] is not None and o["p50_ms"] <= TARGET_P50_MS})
                checks.append({"scenario": key, "target": f"{name}: p99 overhead <= +{TARGET_P99_MS} ms vs forwarder",
                               "value": rnd(o["p99_ms"]), "met": o["p99_ms"] is not None and o["p99_ms"] <= TARGET_P99_MS})
                checks.append({"scenario": key, "target": f"{name}: throughput >= {TARGET_THROUGHPUT:.0%} of forwarder",
                               "value": rnd(o["throughput_ratio"], 4),
                               "met": o["throughput_ratio"] is not None and o["throughput_ratio"] >= TARGET_THROUGHPUT})
            if key == "e" or (key == "external" and res["connections"] >= 1000):
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
        print("\nTargets" + ("  (quick mode: smoke test, the numbers mean nothing)" if cfg.quick else ""))
        for c in checks:
            print(f"  [{verdict(c['met']):>6}] ({c['scenario']}) {c['target']}: {c['value']}")
    return checks
