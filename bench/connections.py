#!/usr/bin/env python3
"""How a running gateway answers on a keep-alive connection versus a new connection per
request (Python 3 stdlib only). Sequential POST /detect of new image URLs, each request
sent in one write; for every answer it records whether the first read held only the
headers (the body came in a later segment) and how long the rest took.

  python3 bench/connections.py --base-url http://127.0.0.1:3000 [--requests 200]

Use a mock Ximilar that answers at once (`spin-test-host mock --latency-ms 0`), so the
numbers are the gateway's and the platform's. Only loopback URLs are accepted.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
import urllib.parse
import uuid


def one_request(sock: socket.socket) -> tuple[float, bool]:
    """Sends one /detect and reads its answer: (milliseconds, body arrived after the headers)."""
    body = json.dumps({"url": f"https://shop.example/bench/conn-{uuid.uuid4().hex}.jpg"}).encode()
    request = (b"POST /detect HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\n\r\n" % len(body)) + body
    started = time.perf_counter()
    sock.sendall(request)
    data = b""
    first_read = None
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the gateway closed the connection")
        data += chunk
        if first_read is None:
            first_read = data
        if b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")]
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:80]!r}")
            if not lengths:
                raise RuntimeError("the answer has no content-length")
            if len(rest) >= int(lengths[0]):
                break
    split = first_read.endswith(b"\r\n\r\n")
    return (time.perf_counter() - started) * 1000, split


def connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def report(name: str, results: list[tuple[float, bool]]) -> dict:
    times = sorted(t for t, _ in results)
    row = {
        "mode": name,
        "requests": len(times),
        "p50_ms": round(statistics.median(times), 2),
        "p90_ms": round(times[int(0.9 * len(times))], 2),
        "over_20_ms": sum(1 for t in times if t > 20),
        "body_after_headers": sum(1 for _, split in results if split),
    }
    print(f"  {name:<28} p50 {row['p50_ms']:>7.2f} ms  p90 {row['p90_ms']:>7.2f} ms  "
          f"over 20 ms: {row['over_20_ms']:>4}  body in a later segment: {row['body_after_headers']:>4} "
          f"of {row['requests']}")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", required=True, help="the running gateway, e.g. http://127.0.0.1:3000")
    ap.add_argument("--requests", type=int, default=200, help="requests per mode (default 200)")
    cfg = ap.parse_args()
    url = urllib.parse.urlparse(cfg.base_url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("only loopback gateways are measured")
    host, port = url.hostname, url.port or 80

    print(f"{cfg.requests} sequential POST /detect per mode against {cfg.base_url}")
    fresh = []
    for _ in range(cfg.requests):
        with connect(host, port) as sock:
            fresh.append(one_request(sock))
    reused = []
    with connect(host, port) as sock:
        for _ in range(cfg.requests):
            reused.append(one_request(sock))
    rows = [report("a new connection each", fresh), report("one keep-alive connection", reused)]
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
