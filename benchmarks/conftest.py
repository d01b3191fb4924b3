"""The benchmarks are scripts run by hand (`python benchmarks/run_all.py`), never tests: they take
minutes, measure rather than assert, and rewrite RESULTS.md. Keep pytest out of this directory
even when it is named on the command line."""

collect_ignore_glob = ["*.py"]
