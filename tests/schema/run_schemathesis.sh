#!/usr/bin/env bash
# Property-based contract test: schemathesis generates requests from openapi.yaml and checks
# the gateway's answers against it. The gateway runs on the test host with its mock Ximilar
# (`spin-test-host serve --mock`, loopback only), so nothing leaves this machine.
#
# Needs (built beforehand; this script builds nothing):
#   cargo build --target wasm32-wasip2 --release -p detect -p tag -p search -p health -p metrics
#   cargo build --release -p spin-test-host
#   pip install -r tests/schema/requirements.txt        # schemathesis, pinned
#
# Usage: tests/schema/run_schemathesis.sh [extra schemathesis run flags]
#   MAX_EXAMPLES=30        test cases per operation and phase (schemathesis --max-examples)
#   SCHEMATHESIS_SEED=N    reproduce a run (the seed is printed at the start)
#   SCHEMATHESIS=path      the schemathesis executable (default: from PATH, else
#                          tests/schema/.venv/bin/schemathesis)
#   SPIN_TEST_HOST=path    the host binary (default target/release/spin-test-host)
#
# Every request and answer is recorded under target/transcripts/schemathesis/ (HAR and VCR
# cassette, unsanitised so that a leaked secret would show, plus the host's output: the
# gateway's log lines) for scripts/leak_sweep.py; the mock uses a distinctive token and
# collection id that the sweep looks for.
# Exit status: schemathesis's (non-zero on any failed check), or 2 if something is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

TOKEN="tok-SECRET-schema-3e8d21"
COLLECTION="col-SECRET-schema-c4a907"
MAX_EXAMPLES="${MAX_EXAMPLES:-30}"
host_bin="${SPIN_TEST_HOST:-$root/target/release/spin-test-host}"
schemathesis="${SCHEMATHESIS:-schemathesis}"
if [ -z "${SCHEMATHESIS:-}" ] && ! command -v schemathesis >/dev/null 2>&1 && [ -x tests/schema/.venv/bin/schemathesis ]; then
    schemathesis="$root/tests/schema/.venv/bin/schemathesis"
fi
out="$root/target/transcripts/schemathesis"

missing=()
[ -x "$host_bin" ] || missing+=("$host_bin: cargo build --release -p spin-test-host")
for c in detect tag search health metrics; do
    [ -f "target/wasm32-wasip2/release/$c.wasm" ] ||
        missing+=("target/wasm32-wasip2/release/$c.wasm: cargo build --target wasm32-wasip2 --release -p detect -p tag -p search -p health -p metrics")
done
command -v "$schemathesis" >/dev/null 2>&1 ||
    missing+=("schemathesis: pip install -r tests/schema/requirements.txt (or python3 -m venv tests/schema/.venv && tests/schema/.venv/bin/pip install -r tests/schema/requirements.txt)")
command -v python3 >/dev/null 2>&1 || missing+=("python3")
if [ ${#missing[@]} -gt 0 ]; then
    printf 'run_schemathesis: missing %s\n' "${missing[@]}" >&2
    exit 2
fi
want="$(sed -n 's/^schemathesis==//p' tests/schema/requirements.txt)"
have="$("$schemathesis" --version 2>/dev/null | awk '{print $NF}')"
if [ -n "$want" ] && [ "$have" != "$want" ]; then
    echo "run_schemathesis: warning: schemathesis $have, tests/schema/requirements.txt pins $want" >&2
fi

rm -rf "$out"
mkdir -p "$out"
work="$(mktemp -d)"
host_pid=""
cleanup() {
    if [ -n "$host_pid" ] && kill -0 "$host_pid" 2>/dev/null; then
        kill -INT "$host_pid" 2>/dev/null || true      # serve stops on ctrl-c
        for _ in $(seq 50); do kill -0 "$host_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$host_pid" 2>/dev/null || true
        wait "$host_pid" 2>/dev/null || true
    fi
    # The gateway's own output (one JSON log line per request) is swept for leaks too.
    cp "$work/host.out" "$out/host-stdout.log" 2>/dev/null || true
    cp "$work/host.err" "$out/host-stderr.log" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Hermetic: a scratch working directory (no .env) and no XIMILAR_* / SPIN_VARIABLE_* from
# the caller; port 0 lets the host pick a free loopback port, which it prints.
clean_env=()
while IFS='=' read -r name _; do
    case "$name" in XIMILAR_*|SPIN_VARIABLE_*) clean_env+=(-u "$name") ;; esac
done < <(env)
(
    cd "$work"
    exec env "${clean_env[@]}" "$host_bin" serve \
        --manifest "$root/spin.toml" --runtime-config-file "$root/runtime-config.toml" \
        --listen 127.0.0.1:0 --mock --mock-token "$TOKEN" --mock-collection-id "$COLLECTION"
) >"$work/host.out" 2>"$work/host.err" &
host_pid=$!

base=""
for _ in $(seq 600); do
    base="$(sed -n 's/^serving on \(http:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/host.out" | head -n1)"
    [ -n "$base" ] && break
    if ! kill -0 "$host_pid" 2>/dev/null; then break; fi
    sleep 0.1
done
if [ -z "$base" ]; then
    echo "run_schemathesis: the test host did not start:" >&2
    tail -n 30 "$work/host.err" >&2
    exit 2
fi
# Ready when it answers (Spin's own health route).
python3 - "$base" <<'EOF'
import sys, time, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        urllib.request.urlopen(sys.argv[1] + "/.well-known/spin/health", timeout=2).read()
        break
    except Exception:
        if time.monotonic() > deadline:
            sys.exit("run_schemathesis: the test host does not answer")
        time.sleep(0.1)
EOF
echo "run_schemathesis: gateway on $base (test host, mock Ximilar), schemathesis $have, max examples $MAX_EXAMPLES"

seed=()
[ -n "${SCHEMATHESIS_SEED:-}" ] && seed=(--seed "$SCHEMATHESIS_SEED")
status=0
"$schemathesis" run openapi.yaml \
    --url "$base" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection,unsupported_method,allow_header_conformance \
    --max-examples "$MAX_EXAMPLES" \
    --request-timeout 20 \
    --generation-database none \
    --report har,vcr,junit \
    --report-dir "$out" \
    --output-sanitize false \
    --no-color \
    "${seed[@]}" "$@" || status=$?
exit "$status"
