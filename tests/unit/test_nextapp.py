"""The real app's helpers and the deploy's new pure pieces: the build's exported settings, the
first-release transform of the lab repo, Prisma's P3009 message, checksums, Server Action forms,
deploy timing split."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bluegreen.lab.nextapp import NextAppError, parse_action_form, split_deploy
from bluegreen.lab.repo import first_release_text
from bluegreen.model import migrations
from bluegreen.model.errors import ConfigError
from bluegreen.model.progress import StepRecord
from bluegreen.render import commands as cmd

KEY = "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY"


@pytest.mark.parametrize(("env_text", "expected"), [
    (f"DATABASE_URL=x\n{KEY}=abc+/=\n", "abc+/="),
    (f'export {KEY}="q1 z="\n', "q1 z="),
    (f"{KEY}='single'\n", "single"),
    (f"{KEY}=first\n{KEY}=second\n", "second"),
    (f"  {KEY} = spaced  \n", "spaced"),
    ("OTHER=1\n", "unset"),
    (None, "unset"),
])
def test_export_build_env(tmp_path: Path, env_text: str | None, expected: str) -> None:
    if env_text is not None:
        (tmp_path / ".env").write_text(env_text)
    script = f'{cmd.export_build_env(str(tmp_path))}; printf "%s" "${{{KEY}-unset}}"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == expected


def test_export_build_env_rejects_bad_names() -> None:
    with pytest.raises(ConfigError, match="not an environment variable name"):
        cmd.export_build_env("/r", ["A;rm -rf /"])


def test_build_exports_before_building() -> None:
    from bluegreen.model.stackfile import load_stack
    t = load_stack(Path(__file__).resolve().parents[2], "lab")
    line = cmd.build(t, "/rel")
    assert line.index(KEY) < line.index(t.app.build_command)
    assert "secret" not in line


@pytest.mark.parametrize(("text", "first"), [
    ("a\nb // release-2\nc\n", "a\nc\n"),
    ("<td>x</td>{/* release-2 */}\n<td>y</td>\n", "<td>y</td>\n"),
    ("// Lines marked `release-2` are left out (bluegreen/lab/repo.py).\n",
     "// Lines marked `release-2` are left out (bluegreen/lab/repo.py).\n"),
    ("notes String? // release-2   \n", ""),
])
def test_first_release_text(text: str, first: str) -> None:
    assert first_release_text(text) == first


def _row(name: str, *, finished: str | None = "2025-01-01T00:00:01.000000Z", rolled: str | None = None,
         checksum: str = "a" * 64, logs: str = "") -> migrations.AppliedRow:
    return migrations.AppliedRow(id=name, checksum=checksum, migration_name=name,
                                 started_at="2025-01-01T00:00:00.000000Z", finished_at=finished,
                                 rolled_back_at=rolled, applied_steps_count=1, logs=logs)


def test_blocked_message_quotes_prisma_and_gives_both_resolutions() -> None:
    row = _row("20250301000000_broken", finished=None, logs="No such table: NoSuchTable\n   0: trace")
    text = migrations.blocked_message([row], "/opt/app/current on green")
    assert text.startswith("Prisma P3009: " + migrations.P3009_TEXT)
    assert "The `20250301000000_broken` migration started at 2025-01-01T00:00:00.000000Z failed" in text
    assert "    No such table: NoSuchTable" in text
    assert 'npx prisma migrate resolve --rolled-back "20250301000000_broken"' in text
    assert 'npx prisma migrate resolve --applied "20250301000000_broken"' in text
    assert "/opt/app/current on green" in text


def test_blocked_message_without_logs() -> None:
    assert "(no log)" in migrations.blocked_message([_row("x", finished=None)], "here")


def test_parse_checksums_ignores_noise() -> None:
    out = f"a_init {'B' * 64}\nnot a line\nb_short abc\n"
    assert migrations.parse_checksums(out) == {"a_init": "b" * 64}


@pytest.mark.parametrize(("local", "rows", "edited"), [
    ({"a": "a" * 64}, [_row("a")], []),
    ({"a": "c" * 64}, [_row("a")], ["a"]),
    ({"a": "c" * 64}, [_row("a", finished=None)], []),  # failed: not applied, not an edit
    ({"a": "c" * 64}, [_row("a", rolled="2025-01-02T00:00:00.000000Z")], []),  # rolled back
    ({}, [_row("a")], []),  # not in the release: applied_not_local's business
    ({"a": "A" * 64}, [_row("a")], []),  # case does not matter
])
def test_edited_after_applying(local: dict[str, str], rows: list[migrations.AppliedRow],
                               edited: list[str]) -> None:
    assert migrations.edited_after_applying(local, rows) == edited


def test_migration_checksums_command(tmp_path: Path) -> None:
    folder = tmp_path / "prisma" / "migrations"
    (folder / "1_a").mkdir(parents=True)
    (folder / "1_a" / "migration.sql").write_text("SELECT 1;\n")
    (folder / "2_empty_dir").mkdir()
    out = subprocess.run(["bash", "-c", cmd.migration_checksums(str(tmp_path))], capture_output=True,
                         text=True, check=True).stdout
    assert migrations.parse_checksums(out) == {"1_a": migrations.migration_checksum("SELECT 1;\n")}
    none = subprocess.run(["bash", "-c", cmd.migration_checksums(str(tmp_path / "nope"))],
                          capture_output=True, text=True, check=True).stdout
    assert none == ""


PAGE = ('<main><p id="release">version 1 on <span id="color">blue</span></p>'
        '<form action="" encType="multipart/form-data" method="POST">'
        '<input type="hidden" name="$ACTION_ID_40363d9a2aab492f3c0f196c5928e23e863921a6cf"/>'
        '<input name="name"/></form></main>')


def test_parse_action_form() -> None:
    assert parse_action_form(PAGE) == ("$ACTION_ID_40363d9a2aab492f3c0f196c5928e23e863921a6cf", "blue")


@pytest.mark.parametrize("html", ["<main>no form</main>", PAGE + PAGE])
def test_parse_action_form_needs_exactly_one(html: str) -> None:
    with pytest.raises(NextAppError, match="expected one Server Action form"):
        parse_action_form(html)


def test_split_deploy() -> None:
    steps = [StepRecord("snapshot CT 134", 0.5), StepRecord("fetch next-v1", 3.0),
             StepRecord("install dependencies", 20.0), StepRecord("build", 40.0),
             StepRecord("migrations", 15.0), StepRecord("back up the database", 2.0),
             StepRecord("apply 1 migration(s)", 12.0), StepRecord("point current at the new release", 0.3),
             StepRecord("reload PM2 on green", 5.0), StepRecord("wait for health on green", 0.4),
             StepRecord("smoke test through the preview frontend", 0.2), StepRecord("prune old releases", 0.6)]
    timing = split_deploy(steps, 90.0, {"generateSeconds": 2.5, "nextBuildSeconds": 36.0})
    assert timing.phases == {"install": 20.0, "generate": 2.5, "build": 37.5, "migrate": 12.0,
                             "reload": 5.0, "health": 0.4}
    assert timing.tool == pytest.approx(90.0 - 77.4)
    assert split_deploy(steps, 90.0).phases["generate"] == 0.0
