"""Performance benchmarks: scripts that print figures measured side by side in one run.

    python -m benchmark.tools.perf.bookkeeping     # IR-Tuning's scoring cost per step
    python -m benchmark.tools.perf.input_pipeline  # dynamic padding vs padding to 256
    python -m benchmark.tools.perf.memory          # peak memory per strategy; frozen blocks' state
    python -m benchmark.tools.perf.suite_overhead  # suite wall time vs its trials' training time

Timings are never asserted in tests (CI runs each on tiny settings for correctness).
"""
