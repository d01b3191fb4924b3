"""RESULTS.md from results.json alone: every figure, every sentence (the machine's included) is
computed here from the data one run of `make bench` wrote. Nothing else feeds the page, and the
page is never edited by hand: change the data (run again) or this renderer.

    python benchmarks/render.py [results.json [RESULTS.md]]

Pure: reads a dict, returns text (tests/unit/test_bench_render.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
BUSY_OTHERS_CPUS = 0.25  # other processes using more than this (in CPUs) make the machine "busy"
# What each of the product's progress steps is, for "where the seconds go".
PHASES = (
    ("fetch <ref>", "fetch"), ("install dependencies", "install"), ("build", "build"),
    ("migrations", "migrate"), ("reload PM2 on <colour>", "reload"), ("wait for health on <colour>", "health gate"),
    ("smoke test through the preview frontend", "smoke test"), ("pre-switch checks", "switch checks"),
    ("flip live traffic to <colour>", "switch (flip)"), ("verify new requests reach the new colour", "verify"),
    ("watch <colour>", "watch"),
)


# --------------------------------------------------------------------------- formatting


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(seconds: float | None, digits: int = 0) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:,.{digits}f} ms"


def secs(seconds: float | None, digits: int = 1) -> str:
    return "n/a" if seconds is None else f"{seconds:,.{digits}f} s"


def ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "n/a"
    return f"{value / reference:.1f}x"


def verdict(value: float | None, target: float) -> str:
    """`met` or `NOT met` (no figure: `not measured`)."""
    if value is None:
        return "not measured"
    return "met" if value <= target else "NOT met"


def _loads(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "n/a"


# --------------------------------------------------------------------------- the machine


def busy(load: dict[str, Any]) -> bool:
    return bool(load.get("otherLabsDuring")) or (load.get("cpusUsedByOthers") or 0.0) >= BUSY_OTHERS_CPUS


def machine_sentences(results: dict[str, Any]) -> list[str]:
    """What the machine was and how busy it was during the run, from the run's own census."""
    m, load = results.get("machine") or {}, results.get("load") or {}
    cpus = load.get("cpus") or m.get("cpus") or 0
    out = [f"{cpus} CPUs ({m.get('cpu', 'unknown')}), {m.get('memoryGiB', '?')} GiB of memory, {m.get('os', '?')}. "
           f"Load average (1/5/15 min): {_loads(load.get('loadBefore') or [])} before the run, "
           f"{_loads(load.get('loadAfter') or [])} after it; the highest 1-minute figure seen during it "
           f"was {load.get('loadMax1min', 'n/a')}."]
    labs = load.get("otherLabsDuring") or []
    if labs:
        out.append(f"{len(labs)} other lab world(s) ran on this machine during the run ({', '.join(labs)}): "
                   f"{len(load.get('otherLabsBefore') or [])} when it started, "
                   f"{len(load.get('otherLabsAfter') or [])} when it ended.")
    else:
        out.append("No other lab world ran on this machine during the run.")
    top = ", ".join(f"{p['command']} {p['cpus']:.2f}" for p in load.get("busiestOthers") or [] if p["cpus"] >= 0.01)
    out.append(f"The CPUs were {load.get('cpusBusy', 0):.2f} of {cpus} busy on average: "
               f"{load.get('cpusUsedByRun', 0):.2f} used by this run's processes, "
               f"{load.get('cpusUsedByOthers', 0):.2f} by other processes"
               + (f" (busiest, in CPUs: {top})" if top else "")
               + f", the rest by processes too short-lived to attribute (sampled every "
               f"{load.get('sampleSeconds', '?')} s).")
    if busy(load):
        out.append("A busy machine: every absolute time below carries other people's work. Ratios against a "
                   "baseline run in the same rounds, under the same load, are the fairer reading.")
    else:
        out.append("The machine was otherwise quiet: the absolute times below are this run's own.")
    return out


# --------------------------------------------------------------------------- push to live


def _phase(name: str) -> str | None:
    return next((phase for prefix, phase in PHASES if name.startswith(prefix)), None)


def push_phases(push: dict[str, Any]) -> dict[str, float]:
    """Seconds by phase (fetch, install, build, migrate, ...) from the top-level progress steps of
    the deploy and the switch, plus what lies outside any step."""
    out: dict[str, float] = {}
    for part in ("deploy", "switch"):
        steps = push[part]["steps"]
        inside = 0.0
        for s in steps:
            if s["depth"] != 0:
                continue
            inside += s["seconds"] or 0.0
            phase = _phase(s["name"]) or "other steps"
            out[phase] = out.get(phase, 0.0) + (s["seconds"] or 0.0)
        out[f"{part}: outside the steps"] = push[part]["wall"] - inside
    return out


def push_section(data: dict[str, Any]) -> tuple[list[str], str]:
    pushes = data["pushes"]
    heads = [f"#{i + 1} {p['ref']} to {p['colour']}" for i, p in enumerate(pushes)]
    names: list[tuple[str, str, int]] = []
    for p in pushes:
        for part in ("deploy", "switch"):
            for s in p[part]["steps"]:
                if (part, s["name"], s["depth"]) not in names:
                    names.append((part, s["name"], s["depth"]))

    def step_seconds(p: dict[str, Any], part: str, name: str, depth: int) -> str:
        found = [s["seconds"] for s in p[part]["steps"] if s["name"] == name and s["depth"] == depth]
        return secs(sum(found)) if found else ""

    rows = [["what", *(p["kind"] for p in pushes)],
            ["dependencies", *(p["dependencies"] or "-" for p in pushes)],
            ["migrations applied", *(", ".join(p["migrationsApplied"]) or "none" for p in pushes)]]
    for part, name, depth in names:
        label = ("&nbsp;&nbsp;&nbsp;&nbsp;" * depth) + (f"{part}: " if depth == 0 else "") + name
        rows.append([label, *(step_seconds(p, part, name, depth) for p in pushes)])
    for part in ("deploy", "switch"):
        rows.append([f"{part}: outside the steps (CLI start, plan, lock, journal)",
                     *(secs(push_phases(p)[f"{part}: outside the steps"]) for p in pushes)])
        rows.append([f"**`{part}` command, process start to exit**", *(secs(p[part]["wall"]) for p in pushes)])
    rows.append(["**push to live (both commands)**", *(secs(p["total"]) for p in pushes)])
    rows.append(["peak memory of the new release's build (RSS)",
                 *(f"{p['peakBuildRssMb']} MB" for p in pushes)])
    rows.append(["live app memory (RSS)", *(f"{p['peakLiveRssMb']} MB" if p["peakLiveRssMb"] else "-"
                                           for p in pushes)])
    latency = []
    for head, p in zip(heads, pushes, strict=True):
        live = p.get("live") or {}
        if live:
            latency.append([head, f"{live['p50Before']} / {live['p99Before']} ms",
                            f"{live['p50DuringBuild']} / {live['p99DuringBuild']} ms",
                            f"{live['failed']} of {live['requests']}", live["retried"]])
    headline = []
    for p in pushes:
        phases = push_phases(p)
        big = sorted(((k, v) for k, v in phases.items() if ":" not in k), key=lambda kv: -kv[1])[:3]
        headline.append(f"push to live of the real app, {p['ref']} ({p['kind']}): {secs(p['total'])} end to end "
                        f"through the CLI (deploy {secs(p['deploy']['wall'])}, switch {secs(p['switch']['wall'])}); "
                        "most of it " + ", ".join(f"{k} {secs(v)}" for k, v in big))
    text = "\n\n".join([
        "Each push is two CLI commands run back to back: `python -m bluegreen deploy --ref REF --migrate --yes` "
        "(to the standby) and `python -m bluegreen switch --yes` (checks, flip, verify, watch). Step times are "
        "the CLI's own progress lines (`ok <step> (12.3s)`, 0.1 s resolution), nested steps indented under "
        "their parent; \"outside the steps\" is the command's wall time minus its top-level steps.",
        md_table(["step", *heads], rows),
        ("The live colour's latency through HAProxy (2 clients on /api/health, the request loop that retries "
         "only what RFC 9112 allows) before the deploy and while the standby built:\n\n"
         + md_table(["push", "p50 / p99 before", "p50 / p99 during the build", "failed", "retried"], latency))
        if latency else "",
    ]).strip()
    return headline, text


# --------------------------------------------------------------------------- cutover


def cutover_section(data: dict[str, Any]) -> tuple[list[str], str]:
    methods = data["methods"]
    ours = methods[0]

    def kinds(m: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v['failed']}/{v['requests']}" for k, v in sorted(m["byKind"].items()))

    rows = [[m["method"], m["cutovers"], m["requests"], f"{m['failed']} ({kinds(m)})", m["retried"],
             m["oldColourAfterReturn"], f"{ms(m['p50Before'], 1)} / {ms(m['p99Before'], 1)}",
             f"{ms(m['p50During'], 1)} / {ms(m['p99During'], 1)}",
             f"{ms(m['toNewMedian'], 1)} / {ms(m['toNewMax'], 1)}", f"{ms(m['callMedian'])} / {ms(m['callMax'])}"]
            for m in methods]
    ratios = [[m["method"], f"{m['failed']} vs {ours['failed']}", ratio(m["p99During"], ours["p99During"]),
               ratio(m["toNewMedian"], ours["toNewMedian"])] for m in methods]
    reasons = [f"- {m['method']}: " + (", ".join(f"{k} x{v}" for k, v in m["failureReasons"].items()) or "none")
               for m in methods]
    errors = [f"- {m['method']}: {len(m['cutoverErrors'])} cutover call(s) raised, e.g. `{m['cutoverErrors'][0]}`"
              for m in methods if m["cutoverErrors"]]
    moved = [m for m in methods if m["method"].startswith("ours")]
    reading = [
        f"Our switch moved live traffic {sum(m['cutovers'] for m in moved)} times "
        f"({', '.join(str(m['cutovers']) + ' ' + m['method'].split(': ', 1)[1] for m in moved)}) under "
        f"{sum(m['requests'] for m in moved)} requests: {sum(m['failed'] for m in moved)} failed, "
        f"{sum(m['retried'] for m in moved)} retried, {sum(m['oldColourAfterReturn'] for m in moved)} answered by "
        "the old colour once the call had returned."]
    for m in methods[1:]:
        per = m["failed"] / m["cutovers"] if m["cutovers"] else 0.0
        reading.append(f"{m['method']}: {m['failed']} failed in {m['cutovers']} cutovers (about {per:.1f} per "
                       f"cutover), {m['retried']} retried; first answer from the new colour "
                       f"{ms(m['toNewMedian'], 1)} after the routing command left (ours "
                       f"{ms(ours['toNewMedian'], 1)}); p99 while cutting over "
                       f"{ratio(m['p99During'], ours['p99During'])} ours.")
    noisy = [m["method"] for m in methods if m["p99Before"] and m["p99During"] and m["p99Before"] > m["p99During"]]
    if noisy:
        reading.append(f"For {', '.join(noisy)} the p99 before any cutover was higher than during them: other work "
                       "moved the tail more than the cutovers did; compare failures first.")
    headline = [f"cutover under load (real app), {m['method']}: {m['failed']} failed of {m['requests']} requests "
                f"over {m['cutovers']} cutovers ({kinds(m)}), {m['retried']} retried; flip to first new-colour "
                f"answer {ms(m['toNewMedian'], 1)}" for m in methods]
    gaps = ", ".join(f"{g:g}" for g in data["gapsSeconds"])
    text = "\n\n".join([
        f"{data['gets']} keep-alive GET clients (home page and /api/health) and {data['posts']} keep-alive Server "
        f"Action POST clients on each of {len(methods) - 1} frontends, on the real Next.js app, each client on ONE "
        f"persistent connection, {data['pause'] * 1000:g} ms between its requests, NO retry of any kind (a "
        "connection closed without an answer is a failed request). The methods took turns, "
        f"{data['rounds']} rounds of {len(methods)} ({data['seconds']:.0f} s in all, a pause cycling through {gaps} s "
        f"after each cutover), the clients of every frontend running throughout; {data['baselineSeconds']:g} s of "
        "load before the first cutover give the \"before\" latencies. A method's requests are those sent from its "
        "cutover call to the next cutover on the same frontend; \"during\" those sent between its call and "
        f"{data['duringTailSeconds']:g} s after it returned. \"Flip to first new-colour answer\" starts for every "
        "method at the same event, the routing command leaving the tool (our flip's `set map`, the reload command "
        "to the master), and ends at the first answer from the new colour to a request sent after it.",
        md_table(["method", "cutovers", "requests", "failed (by kind)", "retried", "old colour after return",
                  "p50 / p99 before", "p50 / p99 during", "flip to first new-colour answer (median / max)",
                  "cutover call (median / max)"], rows),
        "Against ours (normal path), same rounds:",
        md_table(["method", "failed", "p99 during", "flip to first new-colour answer"], ratios),
        "\n".join(f"- {line}" for line in reading),
        "Why requests failed:\n\n" + "\n".join(reasons),
        ("Cutover calls that failed (counted in the requests, not in the cutovers):\n\n" + "\n".join(errors))
        if errors else "",
    ]).strip()
    return headline, text


# --------------------------------------------------------------------------- switch


def switch_section(data: dict[str, Any]) -> tuple[list[str], str]:
    md, tg = data["medians"], data["targets"]
    bare, bare_flip = md.get("bareProcess"), md.get("bareFlipMs")
    watch = md.get("rollbackWatch")
    auto_ours = (md["automation"] - md["automationStandIn"]) if md.get("automation") is not None else None

    def as_s(ms_value: float | None) -> float | None:
        return None if ms_value is None else ms_value / 1000

    rows = [
        ["`switch --emergency`, CLI, process start to exit", ms(md.get("emergencySwitch")),
         f"{ms(bare)} (bare flip process)", ratio(md.get("emergencySwitch"), bare),
         f"<= {tg['emergencySeconds'] * 1000:.0f} ms", verdict(md.get("emergencySwitch"), tg["emergencySeconds"])],
        ["`rollback --emergency`, CLI", ms(md.get("emergencyRollback")), f"{ms(bare)} (bare flip process)",
         ratio(md.get("emergencyRollback"), bare), f"<= {tg['emergencySeconds'] * 1000:.0f} ms",
         verdict(md.get("emergencyRollback"), tg["emergencySeconds"])],
        ["the emergency flip: command sent to first answer from the new colour",
         ms(as_s(md.get("emergencyFlipMs")), 1), f"{ms(as_s(bare_flip), 1)} (bare `set map`, same interval)",
         ratio(md.get("emergencyFlipMs"), bare_flip), f"<= {tg['flipMs']:.0f} ms",
         verdict(as_s(md.get("emergencyFlipMs")), tg["flipMs"] / 1000)],
        ["`switch --no-watch` (checks on), CLI", ms(md.get("normalSwitch")), f"{ms(bare)} (bare flip process)",
         ratio(md.get("normalSwitch"), bare), f"<= {tg['normalSeconds'] * 1000:.0f} ms",
         verdict(md.get("normalSwitch"), tg["normalSeconds"])],
        ["`rollback` (checks on), CLI" + (f", its {secs(watch)} watch taken out" if watch else ""),
         ms(md.get("normalRollback")),
         f"{ms(bare)} (bare flip process)", ratio(md.get("normalRollback"), bare), "-", "-"],
        ["in process: `switch`, mode direct", ms(md.get("direct")), "-", "-", "-", "-"],
        ["in process: `switch`, mode automation, the stand-in engine's time EXCLUDED", ms(auto_ours),
         f"{ms(md.get('direct'))} (mode direct, same rounds)", ratio(auto_ours, md.get("direct")), "-", "-"],
    ]
    headline = [f"{r[0]}: {r[1]}" + (f" (baseline {r[2]}; {r[3]}" if r[2] != "-" else "")
                + (f"; target {r[4]}: {r[5]})" if r[4] != "-" else ")" if r[2] != "-" else "")
                for r in rows if r[1] != "n/a"]
    text = "\n\n".join([
        f"Medians of {data['rounds']} rounds. Each round ran, in turn: the bare flip (an `ssh <lb> 'echo \"set map "
        "...\" | socat ...'` process, then the same `set map` back over an open OpenSSH session, timed from the "
        "command sent to the first answer from the new colour through the public frontend), the four CLI commands "
        "(`python -m bluegreen ... --yes --json`, process start to exit, interpreter and imports included), then "
        "`ops.switch.switch` in process on an `Estate` as the CLI builds it, mode direct and mode automation.",
        md_table(["figure (median)", "ours", "baseline, same rounds", "ours / baseline", "target", "target"], rows),
        f"Mode automation is prod's: stack config set and a targeted `pulumi up` of the routing resource through "
        f"the Automation API. No Pulumi CLI runs here, so the API talks to the recording stand-in of tests/pulumi "
        f"(the real program under Pulumi's mocks, an engine stand-in, the real routing provider flipping HAProxy "
        f"over SSH). Of its {ms(md.get('automation'))} in all, the stand-in took {ms(md.get('automationStandIn'))} "
        f"({data.get('automationPulumiCallsMedian') or 0:.0f} `pulumi` calls): EXCLUDED above, since a real engine "
        f"costs what it costs instead (CLI start, language host, plugins), which this machine cannot measure. The "
        f"routing provider's own work, {ms(md.get('automationProvider'))}, is included.",
    ])
    return headline, text


# --------------------------------------------------------------------------- migrate, status


def migrate_section(data: dict[str, Any]) -> tuple[list[str], str]:
    ours, prisma = data["oursMedian"], data["prismaMedian"]
    names = list(dict.fromkeys(k for o in data["ours"] for k in o["steps"]))

    def med(name: str) -> float | None:
        values = sorted(o["steps"].get(name, 0.0) for o in data["ours"])
        return values[len(values) // 2] if values else None

    inner = sum(med(n) or 0.0 for n in names)
    copies = max((o.get("offsiteCopies") or 1 for o in data["ours"]), default=1)
    rows = [[f"of which: {n}" + (f" ({copies} copies)" if n == "copy the dump off-host" and copies > 1 else ""),
             secs(med(n), 2)] for n in names]
    rows.append(["of which: the rest (list, checksum and read the migrations, `_prisma_migrations`, "
                 "destructive-statement check, dump bookkeeping)", secs((ours or 0.0) - inner, 2)])
    idle = data.get("prismaIdleMedian")
    text = "\n\n".join([
        f"{data['pairs']} pair(s) on the standby's release of the real app, the two sides taking turns (each applies "
        f"its own one-statement migration, `CREATE TABLE` of one column, to the same database): ours is "
        f"`ops.migrate.migrations_step` as a deploy runs it (its migrate command: `{data['migrateCommand']}`), "
        f"Prisma's alone is `{data['command']}` in the same release, as the same user, over the same executor.",
        md_table(["", "median"], [["ours: the migrations step", secs(ours, 2)], *rows,
                                   ["Prisma alone: `prisma migrate deploy`", secs(prisma, 2)],
                                   ["ours / Prisma alone", ratio(ours, prisma)]]),
        (f"Prisma printed its last line {secs(data.get('prismaWorkMedian'), 2)} after it started and exited "
         f"{secs(idle, 2)} later: that wait inside Prisma's own process is most of both sides' time."
         if idle is not None else ""),
    ]).strip()
    headline = [f"the migrations step applying one small migration: {secs(ours, 2)} against {secs(prisma, 2)} for "
                f"Prisma's own `migrate deploy` run beside it ({ratio(ours, prisma)})"]
    return headline, text


def status_section(data: dict[str, Any]) -> tuple[list[str], str]:
    wall, slowest, total = data["wallMedian"], data["slowestMedian"], data["sumOfProbes"]
    rows = [[name, ms(v)] for name, v in sorted(data["probesMedian"].items(), key=lambda kv: -(kv[1] or 0.0))]
    text = "\n\n".join([
        f"`ops.status.status` {data['repeats']} times on an `Estate` as the CLI builds it; after each, every probe "
        "alone (medians).",
        md_table(["", "median"], [["status, whole", ms(wall)], [f"slowest probe: {data['slowest']}", ms(slowest)],
                                  ["all probes one after another", ms(total)]]),
        md_table(["probe alone", "median"], rows),
        f"status takes {ratio(wall, slowest)} its slowest probe and {ratio(wall, total)} the sum of all probes.",
    ])
    return [f"status: {ms(wall)}; slowest probe ({data['slowest']}) {ms(slowest)}; all probes in a row "
            f"{ms(total)}"], text


def rebuild_section(data: dict[str, Any]) -> tuple[list[str], str]:
    goal = data["goalSeconds"]
    phases = ("containers", "configure", "database", "journal", "deploy live", "verify", "deploy standby")
    rows = [[r["ref"], secs(r["servingAfterSeconds"]), secs(r["recoverySeconds"]),
             *(secs(r["phases"].get(p)) for p in phases), "yes" if r["rowsBack"] else "NO"] for r in data["runs"]]
    text = "\n\n".join([
        "Both colours serving the real app, a row written, a verified dump copied to the backup host and the "
        "journal's copy current; then `python -m bluegreen.lab lose-node` (the four containers' processes, "
        "Proxmox entries and disks gone) and the clock starts; `rebuild estate` brings the containers, their "
        "configuration, the database from the off-host dump, the journal, and the release (built again) on both "
        "colours back. 'Served again' is when the public URL answers from the live colour (before the standby "
        "is rebuilt); 'both colours' is the whole run.",
        md_table(["app", "served again after", "both colours after", *phases, "rows back"], rows),
    ])
    headline = [f"the estate rebuilt after losing the node ({r['ref']}): visitors served again after "
                f"{secs(r['servingAfterSeconds'])}, both colours back after {secs(r['recoverySeconds'])}, rows "
                f"{'back' if r['rowsBack'] else 'NOT back'} (goal: both colours within {secs(goal, 0)}: "
                f"{'met' if r['recoverySeconds'] <= goal and r['rowsBack'] else 'NOT met'})" for r in data["runs"]]
    return headline, text


SECTIONS = (
    ("push", "Push to live: the real app deployed and switched to", push_section),
    ("cutover", "Cutover under load, real Next.js app", cutover_section),
    ("switch", "Switch and rollback speed", switch_section),
    ("migrate", "The migration step at its floor", migrate_section),
    ("status", "Status", status_section),
    ("rebuild", "The estate rebuilt after losing the node", rebuild_section),
)


def render(results: dict[str, Any]) -> str:
    git = results.get("git") or {}
    sections = results.get("sections") or {}
    errors = results.get("errors") or {}
    headline: list[str] = []
    bodies: list[str] = []
    for key, title, section in SECTIONS:
        if key in errors:
            headline.append(f"{title}: NOT MEASURED in this run ({errors[key]})")
            bodies.append(f"## {title}\n\nNOT MEASURED in this run: {errors[key]}")
        elif key in sections:
            lines, text = section(sections[key])
            headline += lines
            bodies.append(f"## {title}\n\n{text}")
    minutes = (results.get("seconds") or 0.0) / 60
    dirty = ", with uncommitted changes to tracked files" if git.get("dirty") else ""
    quick = ("\n\nThis was a `--quick` run (fewer repetitions): it checks that the run works; its figures are "
             "not for quoting." if results.get("quick") else "")
    knobs = results.get("knobs") or {}
    where = ("The run had a private lab world of its own" if (results.get("world") or {}).get("private")
             else "The run used the shared lab")
    return (
        "# Benchmark results\n\n"
        f"Run of {results.get('started', '?')} to {results.get('finished', '?')} ({minutes:.1f} minutes), commit "
        f"`{str(git.get('commit', 'unknown'))[:12]}` ({git.get('branch') or '?'}{dirty}), by "
        f"`{results.get('command')}`. "
        "Every figure and sentence on this page is computed by `benchmarks/render.py` from `benchmarks/results.json`, "
        "which that one run wrote; nothing here is edited by hand. "
        f"{where}"
        f"; knobs: {', '.join(f'{k} {v}' for k, v in knobs.items())}.{quick}\n\n"
        "## The machine during the run\n\n" + "\n".join(f"- {s}" for s in machine_sentences(results)) + "\n\n"
        + md_table(["", ""], [(k, v) for k, v in (results.get("machine") or {}).items()]) + "\n\n"
        "All servers are real and local (loopback addresses): HAProxy, sshd per host, PostgreSQL, PM2 running the "
        "real Next.js app, fakepve for the Proxmox API. No Pulumi engine runs here (see the switch section).\n\n"
        "## Headline\n\n" + "\n".join(f"- {line}" for line in headline) + "\n\n"
        + "\n\n".join(bodies) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0]) if args else BENCH_DIR / "results.json"
    target = Path(args[1]) if len(args) > 1 else source.with_name("RESULTS.md")
    target.write_text(render(json.loads(source.read_text())))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
