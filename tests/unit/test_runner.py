"""tests/run.py's bookkeeping: every integration file dealt once, every outcome counted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

RUN = Path(__file__).resolve().parents[1] / "run.py"


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tests_runner", RUN)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_file_is_dealt_to_exactly_one_world(runner: ModuleType) -> None:
    files = [Path(f"test_{i}.py") for i in range(11)]
    shares = runner.deal(files, 3)
    dealt = [f for share in shares for f in share]
    assert sorted(dealt) == sorted(files) and len(dealt) == len(set(dealt))


@pytest.mark.parametrize(("summaries", "not_run", "line"), [
    (["22 passed, 1 xfailed in 110.59s (0:01:50)", "5 passed in 74.31s"], 0, "27 passed, 0 failed, 1 xfailed"),
    (["1 failed, 5 passed in 58.72s", "15 failed in 23.42s", "2 errors in 1s"], 0,
     "5 passed, 16 failed, 2 error"),
    (["3 passed, 1 skipped in 2s"], 2, "3 passed, 0 failed, 1 skipped, 2 files not run"),
    ([], 0, "0 passed, 0 failed"),
])
def test_the_closing_line_sums_every_file(runner: ModuleType, summaries: list[str], not_run: int,
                                          line: str) -> None:
    assert runner.summary_line(runner.tally(summaries), not_run) == line


@pytest.mark.parametrize(("log", "line"), [
    ("....\n1351 passed in 132.45s (0:02:12)\n", "1351 passed in 132.45s (0:02:12)"),
    ("F\n===== 1 failed, 4 passed in 66.75s (0:01:06) =====\n", "1 failed, 4 passed in 66.75s (0:01:06)"),
    # A loop collected at interpreter exit prints its warning after pytest's summary.
    ("....\n1351 passed in 132.45s (0:02:12)\n/x/unraisableexception.py:63: PytestUnraisableExceptionWarning\n"
     "ValueError: Invalid file descriptor: -1\n  warnings.warn(pytest.PytestUnraisableExceptionWarning(msg))\n",
     "1351 passed in 132.45s (0:02:12)"),
    ("3 passed, 2 warnings in 1.00s\n", "3 passed, 2 warnings in 1.00s"),
    ("Traceback (most recent call last):\nImportError: no module\n", "ImportError: no module"),
    ("", "(no output)"),
])
def test_the_closing_line_is_pytests_even_with_output_after_it(runner: ModuleType, tmp_path: Path, log: str,
                                                                line: str) -> None:
    path = tmp_path / "file.log"
    path.write_text(log)
    assert runner.last_line(path) == line


def test_chosen_files_must_exist(runner: ModuleType) -> None:
    assert [f.name for f in runner.integration_files(["test_deploy.py"])] == ["test_deploy.py"]
    with pytest.raises(SystemExit, match=r"no integration file test_nope\.py"):
        runner.integration_files(["test_nope.py"])
