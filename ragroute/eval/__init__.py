"""Evaluation: metrics, dataset loaders for benchmarks, and benchmark runners."""
