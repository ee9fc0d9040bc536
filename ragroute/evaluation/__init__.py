"""Evaluation: metrics, evaluators, and the measuring logic of every benchmark.

The benchmark commands (options and output) are in :mod:`ragroute.cli.bench`.
"""
