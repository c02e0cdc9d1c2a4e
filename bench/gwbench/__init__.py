"""The pieces of the load benchmark, bench/run.py (Python 3 stdlib only).

  common.py     paths, names, the mock's fake credentials, the targets; die() and log()
  procs.py      the processes: Proc (one started process), Host (mock, forwarder and gateway on
                the test host), External (an already-running target), runtime configs, CPU
                time of a process, preflight (what the benchmark needs) and the open-file limit
  load.py       the load: Load (one wrk target), run_wrk, measure (warm-up, then the measured
                run with CPU time per request), and the small HTTP helpers (metrics, credits)
  scenarios.py  the scenarios a, b, c, d, e on the test host and the --base-url mode
  report.py     medians across rounds, overheads vs a baseline, machine info, the tables

bench/variants.py, bench/cache_growth.py and bench/count_host_calls.py use them too.
"""
