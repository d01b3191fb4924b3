"""The lab's git repository of the sample app: a bare repo that deploys clone like the real one.

`build_sample_repo` commits `sample-app/` as release `v1`, then release `v2` on top of it (VERSION 2
and an additive migration). `main` points at `v2`, the latest release, as a default branch does in
the real repository; deploys that want the older release name the tag `v1`. Tags are lightweight,
so a tag's sha is the commit's sha.

Author, committer and dates are fixed, and the caller's git configuration is ignored, so the same
`sample-app/` gives the same shas on every run and every machine: a second `build_sample_repo`
changes nothing, and tests may rely on the shas it returns.

`publish_variant` adds a branch whose tree is a base commit plus some files written or deleted:
tests use it for a build that fails, a destructive or failing migration, an app answering 5xx, ...
Both write objects straight into the bare repo through a temporary index, without a checkout.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from bluegreen.model.errors import BlueGreenError

log = logging.getLogger("bluegreen.lab.repo")

AUTHOR_NAME = "JW Lab"
AUTHOR_EMAIL = "lab@jw-attendant.invalid"
V1_DATE = "2025-01-01T00:00:00+00:00"
V2_DATE = "2025-02-01T00:00:00+00:00"
# Variants share one date: the same base and changes give the same sha, run after run.
VARIANT_DATE = "2025-03-01T00:00:00+00:00"

V2_MIGRATION = "20250201000000_add_notes"
V2_CHANGES: Mapping[str, str] = {
    "VERSION": "2\n",
    f"prisma/migrations/{V2_MIGRATION}/migration.sql": (
        "-- AlterTable: additive and nullable, so the colour still on v1 keeps working.\n"
        'ALTER TABLE "Shift" ADD COLUMN "notes" TEXT;\n'
    ),
}

# Never part of the source: installed dependencies, build output, a developer's local .env.
_EXCLUDED_ANYWHERE = frozenset({"node_modules", ".git", ".next"})
_EXCLUDED_AT_TOP = frozenset({"build", ".env"})
_REQUIRED_FILES = ("package.json", "package-lock.json", "VERSION")
_REGULAR_FILE_MODE = "100644"
_NULL_SHA = "0" * 40


class SampleRepoError(BlueGreenError):
    """The sample app's git repository could not be built or changed."""


def _git_env(date: str | None) -> dict[str, str]:
    # Variables such as GIT_DIR or GIT_INDEX_FILE from the caller would redirect our commands.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
        # Paths given to us name files, never patterns.
        "GIT_LITERAL_PATHSPECS": "1",
    })
    if date is not None:
        env.update({
            "GIT_AUTHOR_NAME": AUTHOR_NAME,
            "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
            "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": AUTHOR_NAME,
            "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
            "GIT_COMMITTER_DATE": date,
        })
    return env


def _run_git(repo: Path, *args: str, index: Path | None = None, work_tree: Path | None = None,
             date: str | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    argv = ["git", "-c", f"user.name={AUTHOR_NAME}", "-c", f"user.email={AUTHOR_EMAIL}",
            "-c", "core.autocrlf=false", "-c", "commit.gpgsign=false", "--git-dir", str(repo)]
    if work_tree is not None:
        argv += ["--work-tree", str(work_tree)]
    env = _git_env(date)
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    try:
        return subprocess.run([*argv, *args], input=stdin, capture_output=True, env=env,
                              cwd=work_tree, timeout=120)
    except FileNotFoundError:
        raise SampleRepoError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise SampleRepoError(f"git {args[0]} in {repo} timed out") from None


def _git(repo: Path, *args: str, index: Path | None = None, work_tree: Path | None = None,
         date: str | None = None, stdin: bytes | None = None) -> str:
    """Run one git command against the bare repo `repo`; its stdout, or SampleRepoError."""
    proc = _run_git(repo, *args, index=index, work_tree=work_tree, date=date, stdin=stdin)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip() or f"exit code {proc.returncode}"
        raise SampleRepoError(f"git {args[0]} in {repo} failed: {detail}")
    return proc.stdout.decode(errors="replace").strip()


def _git_succeeds(repo: Path, *args: str) -> bool:
    return _run_git(repo, *args).returncode == 0


def _ensure_bare_repo(dest: Path) -> None:
    if dest.exists():
        if not dest.is_dir():
            raise SampleRepoError(f"{dest} exists and is not a directory")
        if any(dest.iterdir()):
            proc = _run_git(dest, "rev-parse", "--is-bare-repository")
            if proc.returncode != 0 or proc.stdout.strip() != b"true":
                raise SampleRepoError(f"{dest} exists and is not a bare git repository; "
                                      "refusing to touch it")
            return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(dest)],
                              capture_output=True, env=_git_env(None), timeout=60)
    except FileNotFoundError:
        raise SampleRepoError("git is not installed") from None
    if proc.returncode != 0:
        raise SampleRepoError(f"git init {dest} failed: {proc.stderr.decode(errors='replace').strip()}")


def _copy_sources(sample_dir: Path, target: Path) -> None:
    def generated(directory: str, names: list[str]) -> set[str]:
        top_level = Path(directory) == sample_dir
        return {n for n in names
                if n in _EXCLUDED_ANYWHERE
                or (top_level and (n in _EXCLUDED_AT_TOP or n.startswith(".build-")))}

    shutil.copytree(sample_dir, target, symlinks=True, ignore=generated)


def _tree_of_directory(repo: Path, sample_dir: Path, scratch: Path) -> str:
    """Store `sample_dir` (minus generated files) in the repo and return its tree sha."""
    work = scratch / "work"
    _copy_sources(sample_dir, work)
    index = scratch / "index"
    _git(repo, "add", "--all", ".", index=index, work_tree=work)
    return _git(repo, "write-tree", index=index)


def _check_relative_path(path: str) -> str:
    pure = PurePosixPath(path)
    if (not path or pure.is_absolute() or "\\" in path
            or any(part in ("", ".", "..") for part in path.split("/"))):
        raise SampleRepoError(f"{path!r} is not a plain relative path inside the repository")
    if pure.parts[0] == ".git":
        raise SampleRepoError(f"{path!r}: files under .git cannot be published")
    return str(pure)


def _index_entries(repo: Path, index: Path, path: str) -> list[tuple[str, str]]:
    """(mode, path) of every file at `path` or under it, as the index holds them."""
    out = _git(repo, "ls-files", "--stage", "-z", "--", path, index=index)
    entries = []
    for record in filter(None, out.split("\0")):
        meta, name = record.split("\t", 1)
        entries.append((meta.split(" ", 1)[0], name))
    return entries


def _commit_changes(repo: Path, *, parent: str, changes: Mapping[str, str | None], message: str,
                    date: str, scratch: Path) -> str:
    index = scratch / "variant-index"
    _git(repo, "read-tree", parent, index=index)
    for raw_path in sorted(changes):
        path = _check_relative_path(raw_path)
        content = changes[raw_path]
        existing = _index_entries(repo, index, path)
        if content is None:
            if not existing:
                raise SampleRepoError(f"cannot delete {path}: it is not in {parent[:12]}")
            # Mode 0 removes an entry; --force-remove would want a work tree to compare against.
            removals = "".join(f"0 {_NULL_SHA}\t{name}\0" for _, name in existing)
            _git(repo, "update-index", "-z", "--index-info", index=index, stdin=removals.encode())
            continue
        exact = [mode for mode, name in existing if name == path]
        if existing and not exact:
            raise SampleRepoError(f"cannot write {path}: it is a directory in {parent[:12]}")
        blob = _git(repo, "hash-object", "-w", "--stdin", stdin=content.encode())
        mode = exact[0] if exact else _REGULAR_FILE_MODE
        _git(repo, "update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", index=index)
    tree = _git(repo, "write-tree", index=index)
    return _git(repo, "commit-tree", tree, "-p", parent, "-m", message, date=date)


def _resolve_commit(repo: Path, ref: str) -> str:
    proc = _run_git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if proc.returncode != 0:
        raise SampleRepoError(f"{ref!r} is not a commit in {repo}")
    return proc.stdout.decode().strip()


def _set_refs(repo: Path, refs: Sequence[tuple[str, str]]) -> None:
    for ref, sha in refs:
        _git(repo, "update-ref", ref, sha)


def build_sample_repo(dest: Path, sample_dir: Path) -> dict[str, str]:
    """Create or refresh the bare repo at `dest` from `sample_dir`; returns {"v1": sha, "v2": sha}.

    Idempotent: the shas depend only on the content of `sample_dir`. Refs `main`, `v1` and `v2`
    are (re)pointed at the new commits; other branches (variants) are left as they are.
    """
    if not sample_dir.is_dir():
        raise SampleRepoError(f"sample app directory {sample_dir} does not exist")
    missing = [name for name in _REQUIRED_FILES if not (sample_dir / name).is_file()]
    if missing:
        raise SampleRepoError(f"{sample_dir} is not the sample app: missing {', '.join(missing)}")
    _ensure_bare_repo(dest)
    with tempfile.TemporaryDirectory(prefix="sample-repo-") as tmp:
        scratch = Path(tmp)
        tree = _tree_of_directory(dest, sample_dir, scratch)
        v1 = _git(dest, "commit-tree", tree, "-m", "Release v1: attendants and shifts", date=V1_DATE)
        v2 = _commit_changes(dest, parent=v1, changes=V2_CHANGES,
                             message="Release v2: notes on shifts (additive migration)",
                             date=V2_DATE, scratch=scratch)
    _set_refs(dest, [("refs/tags/v1", v1), ("refs/tags/v2", v2), ("refs/heads/main", v2)])
    _git(dest, "symbolic-ref", "HEAD", "refs/heads/main")
    log.info("sample repo %s: v1 %s, v2 %s (main)", dest, v1[:12], v2[:12])
    return {"v1": v1, "v2": v2}


def publish_variant(repo: Path, *, base: str, branch: str, changes: Mapping[str, str | None],
                    message: str) -> str:
    """Point branch `branch` at a new commit: `base` with `changes` applied; returns its sha.

    `changes` maps a repository path to its new text, or to None to delete that file (or every
    file under that directory). An existing branch of that name is moved (tests re-publish).
    """
    if not message.strip():
        raise SampleRepoError("a variant needs a commit message")
    if not (repo / "HEAD").is_file():
        raise SampleRepoError(f"{repo} is not a git repository")
    if branch.startswith("-") or not _git_succeeds(repo, "check-ref-format", f"refs/heads/{branch}"):
        raise SampleRepoError(f"{branch!r} is not a valid branch name")
    parent = _resolve_commit(repo, base)
    with tempfile.TemporaryDirectory(prefix="sample-variant-") as tmp:
        sha = _commit_changes(repo, parent=parent, changes=changes, message=message,
                              date=VARIANT_DATE, scratch=Path(tmp))
    _git(repo, "update-ref", f"refs/heads/{branch}", sha)
    log.info("sample repo %s: branch %s -> %s (from %s)", repo, branch, sha[:12], base)
    return sha


# --------------------------------------------------------------------------- the real app

# The real Next.js 15 + Prisma app (`sample-next/`) lives in the same bare repository under its own
# refs, so the lab's one stack deploys either: both apps answer to the same commands (`npm ci`,
# `npm run build`, `npm run migrate`, PM2 running `server.js`). `next-v2` (branch `next`) is the
# directory as it is; `next-v1` is its first release: without the last migration, VERSION 1, and
# without every line that ends with a release-2 marker (the `notes` column in schema, page and
# action). Both migrations are byte for byte the stand-in's, so either app can follow the other on
# the shared database.
NEXT_V1_DATE = "2025-04-01T00:00:00+00:00"
NEXT_V2_DATE = "2025-05-01T00:00:00+00:00"
NEXT_REFS = ("next-v1", "next-v2", "next")
RELEASE_2_MARKERS = ("// release-2", "{/* release-2 */}")
_TEXT_SUFFIXES = (".ts", ".tsx", ".js", ".mjs", ".prisma", ".json", ".md", ".sql", ".toml")


def first_release_text(text: str) -> str:
    """A file of `sample-next/` as it was in release 1: lines ending with a release-2 marker dropped."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.rstrip().endswith(RELEASE_2_MARKERS))


def _to_first_release(work: Path) -> None:
    shutil.rmtree(work / "prisma" / "migrations" / V2_MIGRATION, ignore_errors=True)
    (work / "VERSION").write_text("1\n")
    for path in sorted(work.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.suffix in _TEXT_SUFFIXES:
            text = path.read_text()
            first = first_release_text(text)
            if first != text:
                path.write_text(first)


def build_next_refs(dest: Path, next_dir: Path) -> dict[str, str]:
    """Commit `next_dir` (the real app) into the bare repo `dest` as `next-v1` and `next-v2`.

    Idempotent like `build_sample_repo`: same directory, same shas. Returns {"next-v1": sha,
    "next-v2": sha}; branch `next` points at next-v2.
    """
    if not next_dir.is_dir():
        raise SampleRepoError(f"real app directory {next_dir} does not exist")
    missing = [name for name in _REQUIRED_FILES if not (next_dir / name).is_file()]
    if missing:
        raise SampleRepoError(f"{next_dir} is not the real sample app: missing {', '.join(missing)}")
    if not (next_dir / "prisma" / "migrations" / V2_MIGRATION / "migration.sql").is_file():
        raise SampleRepoError(f"{next_dir} has no migration {V2_MIGRATION}")
    _ensure_bare_repo(dest)
    with tempfile.TemporaryDirectory(prefix="next-repo-") as tmp:
        scratch = Path(tmp)
        v2_tree = _tree_of_directory(dest, next_dir, scratch)
        first = scratch / "first"
        _copy_sources(next_dir, first)
        _to_first_release(first)
        index = scratch / "first-index"
        _git(dest, "add", "--all", ".", index=index, work_tree=first)
        v1_tree = _git(dest, "write-tree", index=index)
        v1 = _git(dest, "commit-tree", v1_tree, "-m", "Next.js release 1: attendants and shifts",
                  date=NEXT_V1_DATE)
        v2 = _git(dest, "commit-tree", v2_tree, "-p", v1, "-m",
                  "Next.js release 2: notes on shifts (additive migration)", date=NEXT_V2_DATE)
    _set_refs(dest, [("refs/tags/next-v1", v1), ("refs/tags/next-v2", v2), ("refs/heads/next", v2)])
    log.info("sample repo %s: next-v1 %s, next-v2 %s (branch next)", dest, v1[:12], v2[:12])
    return {"next-v1": v1, "next-v2": v2}
