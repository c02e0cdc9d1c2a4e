"""Paths, names and targets shared by the benchmark scripts; die() and log()."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # the repository (this is bench/gwbench/common.py)
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

# The targets (README: targets).
TARGET_P50_MS = 2.0
TARGET_P99_MS = 15.0
TARGET_THROUGHPUT = 0.90

IMAGE = "https://shop.example/bench/outfit-{n}.jpg"


def die(msg: str, code: int = 2) -> None:
    print(f"bench: {msg}", file=sys.stderr)
    sys.exit(code)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
