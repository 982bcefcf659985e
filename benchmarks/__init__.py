"""Reproducible detection benchmarks on the published poisoned corpora in ../shared."""
