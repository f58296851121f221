"""Benchmarks of quay-geo against the tools a user would pick instead (issue 7).

Run ``python -m bench --help``. Every case starts the servers it needs on 127.0.0.1, runs
quay-geo and its peer interleaved, and writes JSON under ``bench/results/``.
"""
