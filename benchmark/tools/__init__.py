"""Scripts that check or measure the project: data-parallel parity, the GPU check and the
performance benchmarks (`perf/`). They sit above the CLI and may drive it."""
