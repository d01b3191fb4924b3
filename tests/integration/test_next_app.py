"""The real Next.js 15 + Prisma app (`sample-next/`, lab refs `next-v1`/`next-v2`) through the
tool on the lab: real `npm ci` from npm's cache, `prisma generate`, `next build`, `prisma migrate
deploy` as the stack's migrateCommand, PM2 cluster mode running `next start`, the switch under a
request loop, and a Server Action form rendered by one colour and submitted to the other after
the switch.

One test, because each deploy of the real app costs a minute or more: the rest of the suite keeps
the light stand-in (`sample-app/`), which answers to the same stack commands.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bluegreen.lab.lab import Lab
from bluegreen.lab.loadgen import RequestLoop
from bluegreen.lab.nextapp import read_build_timings, render_form, submit
from bluegreen.model.progress import RecordingProgress
from bluegreen.model.stackfile import load_stack
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.switch import switch
from bluegreen.render import commands as cmd
from tests.integration.support import LAB_STACK, copy_project, retry_locked

pytestmark = pytest.mark.integration


def shifts_with_post(lab: Lab, post: str) -> list[str]:
    t = lab.topology
    sql = ("SELECT a.name || '|' || coalesce(s.notes, '') FROM \"Shift\" s JOIN \"Attendant\" a "
           f"ON a.id = s.\"attendantId\" WHERE s.post = '{post}'")
    with lab.executor(t.database_host) as db:
        out = db.run(cmd.psql(t, t.database_host, sql), step="read shifts").stdout
    return [line for line in out.splitlines() if line]


# Two real builds: about 3 minutes on an idle 2-core machine, far more when it is shared.
@pytest.mark.timeout(1800)
def test_real_app_deploys_switches_under_load_and_keeps_server_actions(lab: Lab, tmp_path: Path) -> None:
    project = copy_project(lab.project_dir, tmp_path)
    progress = RecordingProgress()

    def service() -> Estate:
        return Estate(load_stack(project, LAB_STACK), progress=progress)

    first = retry_locked(lambda: deploy(service(), "next-v1", migrate=True))
    assert first.ok and first.sha
    # The build ran the app's own script: prisma generate, then next build, each timed.
    build = read_build_timings(lab.topology, first.color, first.release)
    assert build is not None and build["generateSeconds"] > 0 and build["nextBuildSeconds"] > 0
    assert retry_locked(lambda: switch(service())).ok

    t = load_stack(project, LAB_STACK)
    public = f"{t.public_url}/"
    tls: dict[str, Any] = {"ca_file": t.haproxy.ca_file, "server_name": t.tls_server_name}
    form = render_form(public, **tls)
    assert form.served_by == first.color and form.color == first.color

    second = retry_locked(lambda: deploy(service(), "next-v2", migrate=True))
    assert second.ok and second.color != first.color
    # Four clients on the page (a database read per request). A slow answer is not a dropped one:
    # on a shared 2-core machine a page can take seconds, so the client waits up to 30 s.
    with RequestLoop.visitor(t, "/", clients=4, max_seconds=300, timeout=30.0) as loop:
        loop.wait_for(40, timeout=120)
        switched = retry_locked(lambda: switch(service()))
        loop.wait_for(40, timeout=120)
    assert switched.ok and switched.color == second.color
    assert loop.report.failures == [], loop.report.summary()

    # The page rendered by the first colour (next-v1), submitted after the switch to the second
    # (next-v2, another release in another directory, on another host): the action runs there.
    post = f"door-{int(time.time() * 1000)}"
    sent = submit(public, form, {"name": "Across the switch", "post": post}, **tls)
    assert sent.served_by == second.color
    assert sent.status == 200, sent.body[:500]
    assert shifts_with_post(lab, post) == ["Across the switch|"]

    # The v2 page shows the column its migration added, and a bogus action id is refused: the
    # check above could fail.
    fresh = render_form(public, **tls)
    assert fresh.color == second.color
    notes_post = f"{post}-notes"
    assert submit(public, fresh, {"name": "With notes", "post": notes_post, "notes": "bring a vest"},
                  **tls).status == 200
    assert shifts_with_post(lab, notes_post) == ["With notes|bring a vest"]
    bogus = type(form)(field="$ACTION_ID_40" + "0" * 40, color=None, served_by=None)
    refused = submit(public, bogus, {"name": "Nobody", "post": f"{post}-bogus"}, **tls)
    assert refused.status != 200
    assert shifts_with_post(lab, f"{post}-bogus") == []
