"""Golden values, the differential check against the reference, and benchmarks."""
