"""Benchmarks for the accrual engine: a seeded workload generator
(`python -m bench.workload`), the timing harness (`python -m bench.run`) and
a profiling helper (`python -m bench.profile`). Runs are logged in bench/results/entries.md; the current figures are in BENCHMARKS.md."""
