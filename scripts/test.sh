#!/usr/bin/env bash
# The project's one test command (README, .ci/run). It checks formatting and
# that no modules of src/ import each other in a circle, builds the wasm
# components, runs clippy with warnings denied, then runs, in order:
#   1. cargo tests: native unit tests, manifest checks, property fuzzing, the
#      test host's self-tests, and the end-to-end tests of the built components
#      (state in the test host's model of Spin's key-value store, then in its
#      model of Spin's SQLite database, then in plain maps);
#   2. promtool on a real /metrics scrape from those end-to-end tests, then every
#      query of the Grafana dashboard on a real Prometheus scraping the gateway;
#   3. the deployment checks (compose, Dockerfile, runtime config, alert rules);
#   4. schemathesis against openapi.yaml and the gateway on the test host;
#   5. a quick smoke run of the benchmark harness;
#   6. the leak sweep over every answer recorded by 1 and 4.
# Tools from outside Rust (promtool and prometheus, PyYAML, schemathesis, wrk) are installed by
# .ci/run; locally a missing one skips its step with a notice, except in CI
# (CI=true), where it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
skipped=()

step() { echo; echo "== $*"; }
have() { command -v "$1" >/dev/null 2>&1; }
missing() {
    if [ "${CI:-}" = "true" ]; then
        echo "missing in CI: $1" >&2
        exit 1
    fi
    echo "skipped (missing $1; .ci/run installs it)"
    skipped+=("$2")
}
run() {
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $*" >&2; fi
}

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
        rustup component add "$component"
    fi
done

step "formatting (cargo fmt --check, rustfmt.toml)"
run cargo fmt --all --check
run bash -c 'cd deploy/healthcheck && cargo fmt --check'

step "no import cycle between the modules of src/"
run python3 scripts/module_cycles.py src

step "building the components (wasm32-wasip2, release)"
cargo build --target wasm32-wasip2 --release \
    -p detect -p tag -p search -p health -p metrics -p forwarder

step "clippy, warnings denied (native workspace, then the components for wasm32-wasip2)"
run cargo clippy --release --workspace --exclude detect --exclude tag --exclude search \
    --exclude health --exclude metrics --exclude forwarder --all-targets -- -D warnings
run cargo clippy --release --target wasm32-wasip2 \
    -p detect -p tag -p search -p health -p metrics -p forwarder -- -D warnings

step "cargo tests (unit, manifest, property fuzzing, test host, end to end)"
rm -rf target/transcripts target/metrics-sample.txt
export PROPTEST_CASES="${PROPTEST_CASES:-2000}"
cargo test --release --workspace --exclude detect --exclude tag --exclude search \
    --exclude health --exclude metrics --exclude forwarder

# The run above kept the gateway's state where it does by default, in Spin's key-value
# stores (the test host's model of Spin's SQLite key-value store: locks, blocking calls).
# The same tests again with XIMILAR_STATE_STORE=sqlite (Spin's SQLite database), then
# with the key-value stores as plain maps, which behave like Redis in what matters here
# (no lock, no blocking).
# (Same package selection as above, so cargo reuses that build instead of re-resolving features.)
step "end-to-end tests again with the state in Spin's SQLite database"
run env XGW_E2E_STATE_STORE=sqlite cargo test --release --workspace --exclude detect --exclude tag \
    --exclude search --exclude health --exclude metrics --exclude forwarder --test gateway

step "end-to-end tests again with the state in plain in-memory key-value stores"
run env SPIN_TEST_HOST_KV=map cargo test --release --workspace --exclude detect \
    --exclude tag --exclude search --exclude health --exclude metrics --exclude forwarder --test gateway

step "promtool check metrics (a real scrape from the end-to-end tests)"
if have promtool; then
    run promtool check metrics < target/metrics-sample.txt
else
    missing promtool promtool
fi

step "Grafana dashboard: every panel's query on a real Prometheus scraping the gateway"
if have prometheus; then
    run python3 tests/dashboard/check_panels.py
else
    missing prometheus dashboard
fi

step "deployment checks"
if python3 -c 'import yaml' 2>/dev/null; then
    run python3 tests/deploy/check_deploy.py
else
    missing "python3 yaml (PyYAML)" deploy
fi

step "schemathesis against openapi.yaml"
if have schemathesis || [ -x tests/schema/.venv/bin/schemathesis ]; then
    run bash tests/schema/run_schemathesis.sh
else
    missing schemathesis schemathesis
fi

step "benchmark harness smoke run (numbers: see BENCHMARKS.md)"
if have wrk; then
    run python3 bench/run.py --quick
else
    missing wrk bench
fi

step "leak sweep"
run python3 scripts/leak_sweep.py

echo
if [ ${#skipped[@]} -gt 0 ]; then echo "skipped: ${skipped[*]}"; fi
echo "checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
