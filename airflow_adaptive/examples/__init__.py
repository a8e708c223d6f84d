"""Real workloads for the demo, the runtime tests and the benchmarks (stdlib only)."""
