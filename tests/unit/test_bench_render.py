"""benchmarks/render.py: RESULTS.md from a results.json alone, every sentence computed from it.

Table-driven: a small results.json in, the sentences the page must (and must not) say out. The
renderer is pure, so these run without a lab; the benchmarks themselves are not tests (they
measure, and assert nothing about time)."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

RENDER = Path(__file__).resolve().parents[2] / "benchmarks" / "render.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_render", RENDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load()

STEPS = [{"name": "fetch <ref>", "depth": 0, "seconds": 0.4, "ok": True},
         {"name": "install dependencies", "depth": 0, "seconds": 0.3, "ok": True},
         {"name": "build", "depth": 0, "seconds": 40.0, "ok": True},
         {"name": "migrations", "depth": 0, "seconds": 12.5, "ok": True},
         {"name": "apply 1 migration(s)", "depth": 1, "seconds": 11.0, "ok": True},
         {"name": "reload PM2 on <colour>", "depth": 0, "seconds": 3.0, "ok": True}]
SWITCH_STEPS = [{"name": "pre-switch checks", "depth": 0, "seconds": 0.2, "ok": True},
                {"name": "flip live traffic to <colour> (direct)", "depth": 0, "seconds": 0.1, "ok": True},
                {"name": "watch <colour> for 3s", "depth": 0, "seconds": 3.1, "ok": True}]
METHOD = {"cutovers": 8, "cutoverErrors": [], "requests": 1000, "failed": 0, "retried": 0,
          "byKind": {"GET": {"requests": 800, "failed": 0}, "POST": {"requests": 200, "failed": 0}},
          "failureReasons": {}, "oldColourAfterReturn": 0, "p50Before": 0.01, "p99Before": 0.05,
          "p50During": 0.012, "p99During": 0.06, "maxDuring": 0.1, "toNewMedian": 0.02, "toNewMax": 0.05,
          "toNewMeasured": 8, "callMedian": 0.9, "callMax": 1.2, "frontend": "lab"}

BASE: dict[str, Any] = {
    "command": "make bench", "quick": False, "started": "2026-12-07 01:00:00 UTC",
    "finished": "2026-12-07 01:15:00 UTC", "seconds": 900.0,
    "git": {"commit": "0123456789abcdef0123", "branch": "main", "dirty": False},
    "knobs": {"cutoverRounds": 8}, "world": {"private": True},
    "machine": {"cpus": 2, "cpu": "Test CPU", "memoryGiB": 23.5, "os": "Debian GNU/Linux 12 (bookworm)"},
    "load": {"cpus": 2, "loadBefore": [0.5, 0.4, 0.3], "loadAfter": [0.6, 0.5, 0.4], "loadMax1min": 1.1,
             "otherLabsBefore": [], "otherLabsAfter": [], "otherLabsDuring": [], "cpusBusy": 0.9,
             "cpusUsedByRun": 0.8, "cpusUsedByOthers": 0.05, "busiestOthers": [{"command": "sshd", "cpus": 0.03}],
             "sampleSeconds": 2.0},
    "errors": {},
    "sections": {
        "push": {"pushes": [{"ref": "next-v2", "kind": "one small migration", "colour": "blue",
                             "dependencies": "installed", "migrationsApplied": ["20250201000000_add_notes"],
                             "deploy": {"wall": 60.0, "productSeconds": 58.0, "steps": STEPS},
                             "switch": {"wall": 4.0, "flipMs": 20.0, "watchedSeconds": 3.1, "steps": SWITCH_STEPS},
                             "total": 64.0, "peakBuildRssMb": 700, "peakLiveRssMb": 600,
                             "live": {"p50Before": 4.0, "p99Before": 12.0, "p50DuringBuild": 5.0,
                                      "p99DuringBuild": 20.0, "requests": 5000, "failed": 0, "retried": 0}}]},
        "cutover": {"rounds": 8, "gets": 4, "posts": 2, "pause": 0.02, "gapsSeconds": [0.3, 1.5],
                    "baselineSeconds": 5.0, "duringTailSeconds": 0.5, "seconds": 200.0,
                    "methods": [{**METHOD, "method": "ours: switch (normal path)"},
                                {**METHOD, "method": "haproxy.cfg rewrite + reload (typical config)", "failed": 6,
                                 "failureReasons": {"RemoteDisconnected": 6}, "toNewMedian": 0.3,
                                 "byKind": {"GET": {"requests": 800, "failed": 5},
                                            "POST": {"requests": 200, "failed": 1}}}]},
        "switch": {"rounds": 6, "targets": {"emergencySeconds": 1.0, "flipMs": 20.0, "normalSeconds": 1.0},
                   "automationPulumiCallsMedian": 9,
                   "medians": {"bareProcess": 0.2, "bareFlipMs": 10.0, "emergencySwitch": 0.6,
                               "emergencyRollback": 0.62, "emergencyFlipMs": 15.0, "normalSwitch": 0.9,
                               "normalRollback": 1.0, "rollbackWatch": 0.0, "direct": 0.5, "automation": 0.9,
                               "automationStandIn": 0.25, "automationProvider": 0.3}},
        "migrate": {"pairs": 3, "colour": "green", "ours": [{"wall": 12.5, "steps": {"apply 1 migration(s)": 11.0}}],
                    "oursMedian": 12.5, "prismaMedian": 11.0, "applyMedian": 11.0, "prismaWorkMedian": 0.9,
                    "prismaIdleMedian": 10.0, "command": "npx prisma migrate deploy",
                    "migrateCommand": "npm run --silent migrate"},
        "status": {"repeats": 5, "wallMedian": 1.0, "wallMax": 1.2, "slowest": "database", "slowestMedian": 0.8,
                   "sumOfProbes": 2.5, "probesMedian": {"database": 0.8, "proxmox": 0.01}},
        "rebuild": {"goalSeconds": 300.0,
                    "runs": [{"ref": "next-v2", "servingAfterSeconds": 80.4, "recoverySeconds": 133.2,
                              "rowsBack": True, "phases": {"containers": 2.0, "configure": 10.0, "database": 3.0,
                                                           "journal": 0.5, "deploy live": 60.0, "verify": 1.0,
                                                           "deploy standby": 55.0}}]},
    },
}


def results(**changes: Any) -> dict[str, Any]:
    """BASE with `changes` applied: keys are paths into it (`load.cpusUsedByOthers`)."""
    out = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = out
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return out


CASES = [
    pytest.param(results(), [
        "commit `0123456789ab` (main), by `make bench`",
        "computed by `benchmarks/render.py` from `benchmarks/results.json`",
        "No other lab world ran on this machine during the run.",
        "The machine was otherwise quiet",
        "Load average (1/5/15 min): 0.50 / 0.40 / 0.30 before the run, 0.60 / 0.50 / 0.40 after it",
        "| `switch --emergency`, CLI, process start to exit | 600 ms | 200 ms (bare flip process) | 3.0x | "
        "<= 1000 ms | met |",
        "| the emergency flip: command sent to first answer from the new colour | 15.0 ms |",
        "push to live of the real app, next-v2 (one small migration): 64.0 s end to end through the CLI "
        "(deploy 60.0 s, switch 4.0 s); most of it build 40.0 s, migrate 12.5 s, watch 3.1 s",
        "the migrations step applying one small migration: 12.50 s against 11.00 s for Prisma's own "
        "`migrate deploy` run beside it (1.1x)",
        "Prisma printed its last line 0.90 s after it started and exited 10.00 s later",
        "Our switch moved live traffic 8 times (8 switch (normal path)) under 1000 requests: 0 failed, 0 retried",
        "haproxy.cfg rewrite + reload (typical config): 6 failed in 8 cutovers (about 0.8 per cutover), 0 retried",
        "RemoteDisconnected x6",
        "the stand-in took 250 ms (9 `pulumi` calls): EXCLUDED above",
        "| in process: `switch`, mode automation, the stand-in engine's time EXCLUDED | 650 ms |",
        "the estate rebuilt after losing the node (next-v2): visitors served again after 80.4 s, both colours "
        "back after 133.2 s, rows back (goal: both colours within 300 s: met)",
        "| next-v2 | 80.4 s | 133.2 s | 2.0 s | 10.0 s | 3.0 s | 0.5 s | 60.0 s | 1.0 s | 55.0 s | yes |",
    ], ["NOT met", "busy machine", "NOT MEASURED", "--quick"], id="quiet machine, every target met"),
    pytest.param(results(**{"load.otherLabsDuring": ["jw-lab-full0", "jw-lab-full1"],
                            "load.otherLabsBefore": ["jw-lab-full0", "jw-lab-full1"],
                            "load.otherLabsAfter": ["jw-lab-full1"], "load.cpusUsedByOthers": 1.2,
                            "load.busiestOthers": [{"command": "node", "cpus": 0.7},
                                                   {"command": "python", "cpus": 0.3}],
                            "sections.switch.medians.emergencySwitch": 1.3,
                            "sections.switch.medians.emergencyFlipMs": 25.0}), [
        "2 other lab world(s) ran on this machine during the run (jw-lab-full0, jw-lab-full1): 2 when it "
        "started, 1 when it ended.",
        "1.20 by other processes (busiest, in CPUs: node 0.70, python 0.30)",
        "A busy machine: every absolute time below carries other people's work.",
        "| `switch --emergency`, CLI, process start to exit | 1,300 ms | 200 ms (bare flip process) | 6.5x | "
        "<= 1000 ms | NOT met |",
        "| 25.0 ms | 10.0 ms (bare `set map`, same interval) | 2.5x | <= 20 ms | NOT met |",
        "target <= 1000 ms: NOT met",
    ], ["otherwise quiet", "No other lab world"], id="busy machine, targets not met"),
    pytest.param(results(**{"load.cpusUsedByOthers": 0.6}), ["A busy machine"], ["otherwise quiet"],
                 id="busy by CPU alone"),
    pytest.param(results(**{"sections.rebuild.runs": [{**BASE["sections"]["rebuild"]["runs"][0],
                                                         "recoverySeconds": 420.0, "rowsBack": False}]}),
                 ["both colours back after 420.0 s, rows NOT back (goal: both colours within 300 s: NOT met)"],
                 ["rows back (goal"], id="a rebuild past its goal, rows lost"),
    pytest.param(results(**{"load.otherLabsDuring": ["jw-lab-world0"]}),
                 ["1 other lab world(s) ran on this machine during the run (jw-lab-world0)", "A busy machine"],
                 ["otherwise quiet"], id="busy by another lab alone"),
    pytest.param(results(**{"errors": {"migrate": "BenchError: green has no release to migrate from"},
                            "quick": True, "git.dirty": True}), [
        "## The migration step at its floor\n\nNOT MEASURED in this run: BenchError: green has no release",
        "The migration step at its floor: NOT MEASURED in this run",
        "with uncommitted changes to tracked files",
        "This was a `--quick` run",
    ], ["the migrations step applying one small migration"], id="a failed benchmark and a quick run"),
]


@pytest.mark.parametrize(("data", "says", "never"), CASES)
def test_the_page_says_what_the_data_says(data: dict[str, Any], says: list[str], never: list[str]) -> None:
    page = render.render(json.loads(json.dumps(data)))  # as read back from results.json
    for sentence in says:
        assert sentence in page
    for sentence in never:
        assert sentence not in page


@pytest.mark.parametrize(("value", "target", "expected"), [
    (0.5, 1.0, "met"), (1.0, 1.0, "met"), (1.001, 1.0, "NOT met"), (None, 1.0, "not measured")])
def test_verdict(value: float | None, target: float, expected: str) -> None:
    assert render.verdict(value, target) == expected


def test_where_the_push_went_adds_up_to_its_wall_time() -> None:
    push = BASE["sections"]["push"]["pushes"][0]
    phases = render.push_phases(push)
    assert phases["build"] == 40.0 and phases["migrate"] == 12.5  # the nested apply is not counted twice
    assert sum(phases.values()) == pytest.approx(push["deploy"]["wall"] + push["switch"]["wall"])
