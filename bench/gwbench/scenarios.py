"""The scenarios: a, b, e (overhead), c (cache hit vs miss), d (fast paths), f (coalescing),
g (crop mode's image step) on the test host, and the --base-url mode against an
already-running gateway."""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid

from .common import DETECT_PATH, IMAGE, TOKEN, die, log
from .load import Load, http, log_run, measure, mock_credits, records_body, run_wrk, scrape, series_sum, wait_http
from .procs import External, Host, Proc, cpu_between, cpu_reading, cpu_seconds, gateway_target, settle
from .report import overhead, summarise


def rotate(items: list, k: int) -> list:
    """The order of round k: rounds interleave the targets, each round starting one further."""
    k %= len(items)
    return items[k:] + items[:k]


# ---------------------------------------------------------------- scenarios (test host)


def overhead_loads(mock: Proc | None, fwd: Proc | None, gw: Proc | None, gw_name: str = "gateway") -> dict[str, Load]:
    loads = {}
    if mock:
        loads["mock"] = Load("mock", mock.url, DETECT_PATH, body=records_body(IMAGE), mode="unique",
                             headers={"Authorization": f"Token {TOKEN}"})
    if fwd:
        loads["forwarder"] = Load("forwarder", fwd.url, "/detect", body=records_body(IMAGE), mode="unique")
    if gw:
        loads[gw_name] = Load(gw_name, gw.url, "/detect", body=json.dumps({"url": IMAGE}), mode="unique")
    return loads


def scenario_overhead(cfg, host: Host, key: str, connections: int, latency_ms: int) -> dict:
    """a / b / e: mock direct, forwarder, and the gateway with its cache on and every request
    a miss (unique URLs), once per runtime config; fresh processes per measurement."""
    log(f"scenario {key}: {connections} connections, {latency_ms} ms upstream, "
        f"{cfg.rounds} round(s) x {cfg.warmup}+{cfg.duration} s")
    runs = []
    gateways = {gateway_target(rc): rc for rc in cfg.runtime_configs}
    targets = ["mock", "forwarder", *gateways]
    for rnd in range(cfg.rounds):
        for name in rotate(targets, rnd):
            mock = host.mock(latency_ms)
            svc = None
            try:
                if name == "forwarder":
                    svc = host.forwarder(mock)
                elif name in gateways:
                    svc = host.gateway(mock, cache_ttl_s=3600, runtime_config=gateways[name])
                loads = overhead_loads(mock if name == "mock" else None,
                                       svc if name == "forwarder" else None,
                                       svc if name in gateways else None, gw_name=name)
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
        "overhead": {name: overhead(summary, name, "forwarder") for name in gateways}
                    | {"forwarder": overhead(summary, "forwarder", "mock")},
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


def crop_runs(gateway_url: str, image_host_url: str, n: int, width: int, height: int) -> dict:
    """/search, one at a time, alternating a box of the photo (crop mode: download, decode, crop,
    encode, then the search) and the whole photo (its URL sent, as without crop mode). Each
    request is a new cache key (a new query string; the image host ignores it)."""
    photo = f"{image_host_url}/photo-{width}x{height}.jpg"
    latencies = {"whole photo (URL sent)": [], "box (crop mode)": []}
    non_200 = 0
    # The first request makes the image host encode the photo: not measured.
    for i in range(n + 1):
        tag = uuid.uuid4().hex[:8]
        for name, url in (("whole photo (URL sent)", f"{photo}?n={tag}"),
                          ("box (crop mode)", f"{photo}?n={tag}#xywh={100 + 7 * i},{150 + 5 * i},1200,1800")):
            body = json.dumps({"crop_url": url, "top_k": 5}).encode()
            t0 = time.perf_counter()
            status, _, _ = http("POST", gateway_url + "/search", body, {"Content-Type": "application/json"},
                                timeout=60)
            if i > 0:
                latencies[name].append((time.perf_counter() - t0) * 1000)
                non_200 += status != 200
    return {"latency_ms": {k: sorted(v) for k, v in latencies.items()}, "non_200": non_200}


def outfit_cpu_p50(gateway: Proc, image_host_url: str, n: int, width: int, height: int) -> dict:
    """Median gateway CPU (ms, from its threads' own clocks; see `cpu_between`) for a new photo,
    alternating: one garment alone (a /search of one box, no detection), and a whole outfit as
    the orchestrator asks for it (/detect, then a /search of each garment it found: the photo is
    downloaded and decoded once). The mock's detection names three garments. Also the median of
    each round's outfit / one garment, which a slow spell of the machine moves less."""
    photo = f"{image_host_url}/photo-{width}x{height}.jpg"
    cpu = {"one garment": [], "detect + 3 garments": []}
    headers = {"Content-Type": "application/json"}

    def post(path: str, payload: dict) -> dict:
        status, _, body = http("POST", gateway.url + path, json.dumps(payload).encode(), headers, timeout=60)
        if status != 200:
            die(f"scenario g: {path} answered {status}")
        return json.loads(body)

    for i in range(n + 1):
        for name in cpu:
            url = f"{photo}?outfit={uuid.uuid4().hex[:8]}"
            before = cpu_reading(gateway.p.pid)
            if name == "one garment":
                post("/search", {"crop_url": f"{url}#xywh=212,340,493,782", "top_k": 5})
            else:
                for item in post("/detect", {"url": url})["items"]:
                    post("/search", {"crop_url": item["crop_url"], "top_k": 5})
            spent = cpu_between(before, cpu_reading(gateway.p.pid))
            if i > 0 and spent is not None:
                cpu[name].append(spent * 1000)
    medians = {k: sorted(v)[len(v) // 2] if v else None for k, v in cpu.items()}
    pairs = [o / g for g, o in zip(cpu["one garment"], cpu["detect + 3 garments"]) if g > 0]
    medians["outfit / one garment, median of rounds"] = sorted(pairs)[len(pairs) // 2] if pairs else None
    return medians


def crop_result(runs: dict, n: int, width: int, height: int, steps: list[dict] | None) -> dict:
    pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None  # noqa: E731
    whole, boxed = runs["latency_ms"]["whole photo (URL sent)"], runs["latency_ms"]["box (crop mode)"]
    steps = steps or []
    return {
        "scenario": "g", "photo": f"{width}x{height} JPEG", "searches": n, "non_200": runs["non_200"],
        "off_p50_ms": pct(whole, 0.5), "on_p50_ms": pct(boxed, 0.5), "on_p90_ms": pct(boxed, 0.9),
        "fetch_p50_ms": pct(sorted(s["image_ms"] for s in steps), 0.5),
        "crop_p50_ms": pct(sorted(s["crop_ms"] for s in steps if s.get("crop_ms") is not None), 0.5),
        "crop_p90_ms": pct(sorted(s["crop_ms"] for s in steps if s.get("crop_ms") is not None), 0.9),
        "summary": {},
    }


def scenario_crop(cfg, host: Host, width: int = 4000, height: int = 3000) -> dict:
    """g: crop mode's image step on a 12 MP JPEG from the loopback image host, upstream answering
    at once. The latency of a boxed /search minus that of a whole-photo /search (same gateway,
    same run) is the step; the component also logs each step's download (image_ms) and decode +
    crop + encode (crop_ms)."""
    n = 5 if cfg.quick else 40
    log(f"scenario g: crop step, {n} searches of boxes in a {width}x{height} JPEG, one at a time")
    mock = host.mock(0)
    images = host.images()
    gw = None
    try:
        gw = host.gateway(mock, cache_ttl_s=3600, variables={"search_crop": "true", "image_host_a": images.url})
        runs = crop_runs(gw.url, images.url, n, width, height)
        steps = [json.loads(line[line.index("{"):]) for line in gw.err_path.read_text().splitlines()
                 if '"crop_ms"' in line]
        outfit = outfit_cpu_p50(gw, images.url, max(3, n // 2), width, height)
    finally:
        host.stop(gw, images, mock)
    result = crop_result(runs, n, width, height, steps[1:])
    result["outfit_cpu_ms_p50"] = outfit
    return result


# ---------------------------------------------------------------- base-url mode


def scenario_coalescing(cfg, host: Host, callers: int, latency_ms: int) -> dict:
    """f: bursts of `callers` identical /detect of a new image at once. One billed call is
    expected per burst; the followers wait for the leader's answer in the cache. Reports how
    much later than the first answer of its burst each other caller is answered."""
    import concurrent.futures

    bursts = 4 if cfg.quick else 30
    log(f"scenario f: {bursts} bursts of {callers} identical /detect, {latency_ms} ms upstream")
    mock = host.mock(latency_ms)
    gw = None
    try:
        gw = host.gateway(mock, cache_ttl_s=3600)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=callers)
        extra_ms, firsts_ms, calls, statuses = [], [], [], []

        def one(body):
            t0 = time.perf_counter()
            status, _, _ = http("POST", gw.url + "/detect", body, {"Content-Type": "application/json"}, timeout=30)
            return status, (time.perf_counter() - t0) * 1000

        for n in range(bursts):
            body = json.dumps({"url": f"https://shop.example/bench/burst-{uuid.uuid4().hex[:8]}-{n}.jpg"}).encode()
            before = mock_credits(mock.url, TOKEN)
            results = list(pool.map(one, [body] * callers))
            calls.append(mock_credits(mock.url, TOKEN) - before)
            statuses += [s for s, _ in results]
            times = sorted(t for _, t in results)
            firsts_ms.append(times[0])
            extra_ms += [t - times[0] for t in times[1:]]
            time.sleep(0.05)
        pool.shutdown()
    finally:
        host.stop(gw, mock)
    extra_ms.sort()
    pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None  # noqa: E731
    return {
        "scenario": "f", "connections": callers, "upstream_latency_ms": latency_ms, "bursts": bursts,
        "upstream_calls_per_burst": calls, "non_200": sum(1 for s in statuses if s != 200),
        "first_answer_p50_ms": pct(sorted(firsts_ms), 0.5),
        "follower_extra_p50_ms": pct(extra_ms, 0.5), "follower_extra_p90_ms": pct(extra_ms, 0.9),
        "summary": {},
    }


def check_loopback(url: str, allow: bool) -> str:
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        die(f"not an http(s) URL: {url}")
    if not allow and u.hostname not in ("127.0.0.1", "localhost", "::1"):
        die(f"{url} is not on loopback; pass --allow-non-loopback if you really mean it")
    return url.rstrip("/")


def run_base_url(cfg) -> list[dict]:
    gw = External(check_loopback(cfg.base_url, cfg.allow_non_loopback), cfg.gateway_pid)
    fwd = (External(check_loopback(cfg.forwarder_url, cfg.allow_non_loopback), cfg.forwarder_pid)
           if cfg.forwarder_url else None)
    mock = External(check_loopback(cfg.mock_url, cfg.allow_non_loopback)) if cfg.mock_url else None
    token = cfg.token or TOKEN
    for t in (gw, fwd, mock):
        if t:
            try:
                wait_http(t.url + "/", timeout=5)
            except OSError as e:
                die(f"cannot reach {t.url}: {e}", 1)
    if cfg.image_host_url:
        # Scenario g against a running gateway in crop mode (its logs are its own; latency only).
        images = check_loopback(cfg.image_host_url, cfg.allow_non_loopback).rstrip("/")
        n = 5 if cfg.quick else 40
        log(f"base-url: crop step, {n} searches of boxes in a 4000x3000 JPEG from {images}, one at a time")
        result = crop_result(crop_runs(gw.url, images, n, 4000, 3000), n, 4000, 3000, None)
        if gw.p:  # its pid was given: the gateway's CPU per garment and per outfit as well
            result["outfit_cpu_ms_p50"] = outfit_cpu_p50(gw, images, max(3, n // 2), 4000, 3000)
        return [result]
    loads = overhead_loads(mock, fwd, gw)
    if mock:
        loads["mock"].headers = {"Authorization": f"Token {token}"}
    log(f"base-url: {cfg.connections} connections, {cfg.rounds} round(s) x {cfg.warmup}+{cfg.duration} s")
    # Each target's own server process, when its pid was given: its CPU time per request.
    servers = {"mock": mock, "forwarder": fwd, "gateway": gw}
    runs = []
    for rnd in range(cfg.rounds):
        for name in rotate(list(loads), rnd):
            r = measure(cfg, loads[name], cfg.connections, procs={"host": servers[name]})
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
                     "forwarder": overhead(summary, "forwarder", "mock")},
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
