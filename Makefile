# The two commands a newcomer needs: `make demo` (the whole story on the local lab) and `make test`.
PY := .venv/bin/python

.PHONY: setup demo test lab-up lab-legacy lab-down lab-reset lab-status lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m bluegreen.lab.demo

test: setup
	$(PY) tests/run.py

lab-up: setup
	$(PY) -m bluegreen.lab up

# The estate as it runs today, built by hand on the lab's hosts (rehearse a takeover on it).
lab-legacy: setup
	$(PY) -m bluegreen.lab up --legacy

lab-down:
	@if [ -x $(PY) ]; then $(PY) -m bluegreen.lab down; fi

# Any lab state (the legacy estate, adopted or not, after lose-node, after the demo) back to a new lab.
lab-reset: setup
	$(PY) -m bluegreen.lab reset

lab-status:
	$(PY) -m bluegreen.lab status

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy bluegreen components __main__.py tests benchmarks

# One run of every benchmark (about 15 minutes on 2 cores) in a private lab world: writes
# benchmarks/results.json and renders benchmarks/RESULTS.md from it. `make bench BENCH_ARGS=--quick` to check it works.
bench: setup
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)
