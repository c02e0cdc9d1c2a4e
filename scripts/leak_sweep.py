#!/usr/bin/env python3
"""Leak sweep: no recorded gateway answer may contain the token or the collection id.

Scans every file under target/transcripts/ (the end-to-end tests' e2e.txt, the schemathesis
run's HAR / cassette / reports) and target/metrics-sample.txt for each secret, as plain text
and in base64 (HAR and cassettes may store bodies base64-encoded).

  python3 scripts/leak_sweep.py                       # the known test secrets (below)
  python3 scripts/leak_sweep.py --token T --collection-id C [--secret S]...
  LEAK_SWEEP_SECRETS="T,C" python3 scripts/leak_sweep.py

Secrets swept by default (each run that records transcripts uses one of these pairs):
  e2e tests (tests/host/tests/gateway/common.rs)   tok-SECRET-e2e-7f3a9c / col-SECRET-e2e-91bc40
  schemathesis (tests/schema/run_schemathesis.sh)  tok-SECRET-schema-3e8d21 / col-SECRET-schema-c4a907
  `serve --mock` defaults (tests/host/src/main.rs)  test-token / test-collection
--no-defaults sweeps only the secrets given.

Exit status: 0 with no hit; 1 on any hit (file:line printed), when no transcript was found
(a sweep of nothing must not pass), or when a --require'd file is missing or empty.
Stdlib only.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_SECRETS = [
    "tok-SECRET-e2e-7f3a9c",
    "col-SECRET-e2e-91bc40",
    "tok-SECRET-schema-3e8d21",
    "col-SECRET-schema-c4a907",
    "test-token",
    "test-collection",
]


def base64_forms(secret: bytes) -> list[bytes]:
    """The base64 text that `secret` produces wherever it sits in an encoded stream.

    For each of the 3 alignments, keep only the characters whose 6 bits come entirely from
    the secret, so the form is found whatever bytes surround the secret. URL-safe variants too.
    """
    forms = set()
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + secret)
        start = -(-shift * 8 // 6)  # first char made only of secret bits: ceil(shift*8/6)
        end = (shift + len(secret)) * 8 // 6  # chars fully inside the secret's bits
        core = enc[start:end]
        if len(core) >= 8:
            forms.add(core)
            forms.add(core.replace(b"+", b"-").replace(b"/", b"_"))
    return sorted(forms)


def mask(secret: str) -> str:
    return secret[:4] + "…" + f"({len(secret)} chars)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--token", action="append", default=[], help="a token to look for (repeatable)")
    ap.add_argument("--collection-id", action="append", default=[], help="a collection id to look for (repeatable)")
    ap.add_argument("--secret", action="append", default=[], help="any other secret string (repeatable)")
    ap.add_argument("--no-defaults", action="store_true", help="do not add the known test secrets")
    ap.add_argument("--transcripts", default=str(ROOT / "target" / "transcripts"), help="directory to sweep (recursively)")
    ap.add_argument("--metrics-sample", default=str(ROOT / "target" / "metrics-sample.txt"),
                    help="also swept when present")
    ap.add_argument("--require", action="append", default=[],
                    help="a file (relative to the transcripts directory) that must exist and be non-empty")
    args = ap.parse_args()

    secrets = [*args.token, *args.collection_id, *args.secret]
    secrets += [s for s in os.environ.get("LEAK_SWEEP_SECRETS", "").split(",")]
    for name in ("LEAK_SWEEP_TOKEN", "LEAK_SWEEP_COLLECTION_ID"):
        secrets.append(os.environ.get(name, ""))
    if not args.no_defaults:
        secrets += DEFAULT_SECRETS
    secrets = list(dict.fromkeys(s.strip() for s in secrets if s and s.strip()))
    if not secrets:
        print("leak sweep: no secret to look for", file=sys.stderr)
        return 1
    too_short = [s for s in secrets if len(s) < 6]
    if too_short:
        print(f"leak sweep: secrets shorter than 6 characters would match by chance: {[mask(s) for s in too_short]}",
              file=sys.stderr)
        return 1

    needles: list[tuple[bytes, str]] = []
    for s in secrets:
        raw = s.encode()
        needles.append((raw, f"{mask(s)}"))
        for form in base64_forms(raw):
            needles.append((form, f"{mask(s)} base64"))

    tdir = Path(args.transcripts)
    files = sorted(p for p in tdir.rglob("*") if p.is_file()) if tdir.is_dir() else []
    transcripts = len(files)
    problems = []
    if transcripts == 0:
        problems.append(f"no transcript under {tdir}: run the end-to-end tests and/or tests/schema/run_schemathesis.sh first")
    for req in args.require:
        p = tdir / req
        if not p.is_file() or p.stat().st_size == 0:
            problems.append(f"required transcript {p} is missing or empty")
    sample = Path(args.metrics_sample)
    if sample.is_file():
        files.append(sample)

    hits = []
    total = 0
    for path in files:
        data = path.read_bytes()
        total += len(data)
        for needle, label in needles:
            start = 0
            while (i := data.find(needle, start)) != -1:
                line = data.count(b"\n", 0, i) + 1
                hits.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}: {label}")
                start = i + 1
    if transcripts and total == 0:
        problems.append("every transcript is empty")

    for h in hits:
        print(f"LEAK {h}")
    for p in problems:
        print(f"leak sweep: {p}", file=sys.stderr)
    print(f"leak sweep: {len(secrets)} secrets (plain and base64), {transcripts} transcripts"
          + (" + the metrics sample" if sample.is_file() else ""))
    print(f"leak sweep: {len(files)} files, {total} bytes scanned, {len(hits)} hits")
    return 1 if hits or problems else 0


if __name__ == "__main__":
    sys.exit(main())
