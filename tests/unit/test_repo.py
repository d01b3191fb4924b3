"""The lab's bare git repo of the sample app: stable shas, v1/v2 content, variants, bad input."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bluegreen.lab.repo import V2_MIGRATION, SampleRepoError, build_sample_repo, publish_variant
from bluegreen.model.errors import BlueGreenError

SAMPLE_APP = Path(__file__).resolve().parents[2] / "sample-app"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def files_at(repo: Path, ref: str) -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", ref).splitlines())


def show(repo: Path, ref: str, path: str) -> str:
    return git(repo, "show", f"{ref}:{path}")


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A copy of the sample app's sources, so a test can change them."""
    copy = tmp_path / "sample-app"
    generated = shutil.ignore_patterns("node_modules", "build", ".build-*", ".env")
    shutil.copytree(SAMPLE_APP, copy, ignore=generated)
    return copy


@pytest.fixture
def repo(tmp_path: Path, sample: Path) -> tuple[Path, dict[str, str]]:
    dest = tmp_path / "sample-app.git"
    return dest, build_sample_repo(dest, sample)


def test_same_sources_give_the_same_shas_in_any_repo_and_on_rebuild(tmp_path: Path, sample: Path) -> None:
    first = build_sample_repo(tmp_path / "a.git", sample)
    again = build_sample_repo(tmp_path / "a.git", sample)
    elsewhere = build_sample_repo(tmp_path / "b.git", sample)
    assert first == again == elsewhere
    assert set(first) == {"v1", "v2"}
    assert first["v1"] != first["v2"]
    assert all(len(sha) == 40 for sha in first.values())


def test_caller_git_environment_does_not_change_the_result(tmp_path: Path, sample: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    expected = build_sample_repo(tmp_path / "clean.git", sample)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Somebody Else")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2030-01-01T00:00:00+00:00")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere.git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "stray-index"))
    assert build_sample_repo(tmp_path / "dirty-env.git", sample) == expected
    assert not (tmp_path / "elsewhere.git").exists()


def test_refs_main_is_v2_and_head_is_main(repo: tuple[Path, dict[str, str]]) -> None:
    dest, shas = repo
    assert git(dest, "rev-parse", "--is-bare-repository") == "true"
    assert git(dest, "rev-parse", "refs/tags/v1") == shas["v1"]
    assert git(dest, "rev-parse", "refs/tags/v2") == shas["v2"]
    assert git(dest, "rev-parse", "refs/heads/main") == shas["v2"]
    assert git(dest, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(dest, "rev-parse", f"{shas['v2']}^") == shas["v1"]


def test_v1_is_the_sample_app_and_v2_adds_version_and_an_additive_migration(
        repo: tuple[Path, dict[str, str]], sample: Path) -> None:
    dest, _ = repo
    v1_files = files_at(dest, "v1")
    expected = {p.relative_to(sample).as_posix() for p in sample.rglob("*") if p.is_file()}
    assert v1_files == expected
    assert show(dest, "v1", "VERSION") == "1"
    assert show(dest, "v2", "VERSION") == "2"
    migration = f"prisma/migrations/{V2_MIGRATION}/migration.sql"
    assert migration not in v1_files
    assert files_at(dest, "v2") == v1_files | {migration}
    sql = show(dest, "v2", migration)
    assert 'ADD COLUMN "notes"' in sql and "NOT NULL" not in sql
    assert show(dest, "v2", "package-lock.json") == (sample / "package-lock.json").read_text().strip()


def test_generated_files_are_not_committed_and_do_not_change_shas(tmp_path: Path, sample: Path) -> None:
    clean = build_sample_repo(tmp_path / "clean.git", sample)
    (sample / "node_modules" / "pg").mkdir(parents=True)
    (sample / "node_modules" / "pg" / "index.js").write_text("module.exports = {};\n")
    (sample / "build").mkdir()
    (sample / "build" / "BUILD_ID").write_text("abc\n")
    (sample / ".env").write_text("DATABASE_URL=postgresql://u:hunter2@db/x\n")
    (sample / ".build-tmp").mkdir()
    (sample / ".build-tmp" / "BUILD_ID").write_text("half written\n")
    dest = tmp_path / "with-junk.git"
    assert build_sample_repo(dest, sample) == clean
    for path in files_at(dest, "v2"):
        assert not path.startswith(("node_modules/", "build/", ".build-")), path
        assert path != ".env"


def test_refresh_after_the_sources_change_moves_the_refs(tmp_path: Path, sample: Path) -> None:
    dest = tmp_path / "repo.git"
    before = build_sample_repo(dest, sample)
    (sample / "src" / "index.html").write_text("<p>changed</p>\n")
    after = build_sample_repo(dest, sample)
    assert after["v1"] != before["v1"] and after["v2"] != before["v2"]
    assert git(dest, "rev-parse", "v1") == after["v1"]
    assert git(dest, "rev-parse", "main") == after["v2"]
    assert show(dest, "v1", "src/index.html") == "<p>changed</p>"


def test_a_clone_checks_out_main_and_tags(tmp_path: Path, repo: tuple[Path, dict[str, str]]) -> None:
    dest, _ = repo
    subprocess.run(["git", "clone", "--quiet", str(dest), str(tmp_path / "checkout")], check=True)
    assert (tmp_path / "checkout" / "VERSION").read_text() == "2\n"
    subprocess.run(["git", "clone", "--quiet", "--branch", "v1", str(dest), str(tmp_path / "old")],
                   check=True, capture_output=True)
    assert (tmp_path / "old" / "VERSION").read_text() == "1\n"
    assert not (tmp_path / "old" / "prisma" / "migrations" / V2_MIGRATION).exists()


def test_publish_variant_writes_and_deletes_on_top_of_base(repo: tuple[Path, dict[str, str]]) -> None:
    dest, shas = repo
    sha = publish_variant(dest, base="v1", branch="variant/broken", message="A broken build", changes={
        "BUILD_SHOULD_FAIL": "on purpose\n",
        "VERSION": "9\n",
        "src/index.html": None,
        "prisma/migrations/20250101000000_init": None,
    })
    assert git(dest, "rev-parse", "refs/heads/variant/broken") == sha
    assert git(dest, "rev-parse", f"{sha}^") == shas["v1"]
    assert git(dest, "log", "-1", "--format=%s", sha) == "A broken build"
    files = files_at(dest, sha)
    assert files == (files_at(dest, "v1") | {"BUILD_SHOULD_FAIL"}) - {
        "src/index.html", "prisma/migrations/20250101000000_init/migration.sql"}
    assert show(dest, sha, "VERSION") == "9"
    assert show(dest, sha, "BUILD_SHOULD_FAIL") == "on purpose"
    assert show(dest, sha, "server.js") == show(dest, "v1", "server.js")
    # Tags and main are not touched by a variant.
    assert git(dest, "rev-parse", "main") == shas["v2"]


def test_publish_variant_keeps_file_modes_and_is_repeatable(repo: tuple[Path, dict[str, str]]) -> None:
    dest, shas = repo
    first = publish_variant(dest, base=shas["v2"], branch="fault", message="answer 5xx",
                            changes={"scripts/build.js": "console.log('x');\n"})
    again = publish_variant(dest, base="v2", branch="fault", message="answer 5xx",
                            changes={"scripts/build.js": "console.log('x');\n"})
    assert first == again
    mode_before = git(dest, "ls-tree", "v2", "scripts/build.js").split()[0]
    mode_after = git(dest, "ls-tree", first, "scripts/build.js").split()[0]
    assert mode_after == mode_before
    moved = publish_variant(dest, base="v2", branch="fault", message="answer 5xx, take two",
                            changes={"scripts/build.js": "console.log('y');\n"})
    assert moved != first
    assert git(dest, "rev-parse", "fault") == moved


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"base": "no-such-ref", "branch": "x"}, "'no-such-ref' is not a commit"),
    ({"base": "--all", "branch": "x"}, "'--all' is not a commit"),
    ({"base": "v1", "branch": "bad..name"}, "not a valid branch name"),
    ({"base": "v1", "branch": "-x"}, "not a valid branch name"),
    ({"base": "v1", "branch": "x", "changes": {"../escape": "x"}}, "not a plain relative path"),
    ({"base": "v1", "branch": "x", "changes": {"/etc/passwd": "x"}}, "not a plain relative path"),
    ({"base": "v1", "branch": "x", "changes": {"a//b": "x"}}, "not a plain relative path"),
    ({"base": "v1", "branch": "x", "changes": {".git/config": "x"}}, "under .git"),
    ({"base": "v1", "branch": "x", "changes": {"missing.txt": None}}, "cannot delete missing.txt"),
    ({"base": "v1", "branch": "x", "changes": {"prisma": "x"}}, "cannot write prisma: it is a directory"),
    ({"base": "v1", "branch": "x", "changes": {"*.js": None}}, "cannot delete *.js"),
    ({"base": "v1", "branch": "x", "message": "  "}, "needs a commit message"),
])
def test_publish_variant_rejects_bad_input(repo: tuple[Path, dict[str, str]], kwargs: dict[str, object],
                                           message: str) -> None:
    dest, _ = repo
    args: dict[str, object] = {"changes": {"a.txt": "a"}, "message": "m", **kwargs}
    with pytest.raises(SampleRepoError, match=re.escape(message)) as info:
        publish_variant(dest, **args)  # type: ignore[arg-type]
    assert isinstance(info.value, BlueGreenError)
    assert git(dest, "for-each-ref", "--format=%(refname)", "refs/heads/x") == ""


def test_publish_variant_needs_a_repository(tmp_path: Path) -> None:
    with pytest.raises(SampleRepoError, match="is not a git repository"):
        publish_variant(tmp_path, base="v1", branch="x", changes={}, message="m")


def test_build_refuses_a_destination_that_is_not_a_bare_repo(tmp_path: Path, sample: Path) -> None:
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "precious.txt").write_text("keep me\n")
    with pytest.raises(SampleRepoError, match="not a bare git repository"):
        build_sample_repo(occupied, sample)
    assert sorted(p.name for p in occupied.iterdir()) == ["precious.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(SampleRepoError, match="not a directory"):
        build_sample_repo(a_file, sample)


def test_build_accepts_an_empty_existing_directory(tmp_path: Path, sample: Path) -> None:
    empty = tmp_path / "empty.git"
    empty.mkdir()
    shas = build_sample_repo(empty, sample)
    assert git(empty, "rev-parse", "main") == shas["v2"]


def test_build_rejects_a_directory_that_is_not_the_sample_app(tmp_path: Path, sample: Path) -> None:
    with pytest.raises(SampleRepoError, match="does not exist"):
        build_sample_repo(tmp_path / "repo.git", tmp_path / "nowhere")
    (sample / "package-lock.json").unlink()
    with pytest.raises(SampleRepoError, match=r"missing package-lock\.json"):
        build_sample_repo(tmp_path / "repo.git", sample)
    assert not (tmp_path / "repo.git").exists()
