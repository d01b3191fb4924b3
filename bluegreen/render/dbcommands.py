"""Command lines and SQL for the database host: dumps, their verification, restore, migration listing."""

from __future__ import annotations

from datetime import datetime

from bluegreen.model.dumps import SIDECAR_SUFFIX
from bluegreen.model.topology import Container, Topology
from bluegreen.render import commands as cmd
from bluegreen.render.shell import sh


def tables_query() -> str:
    """Every ordinary and partitioned table of the database: `schema.name<US>relkind` lines."""
    return ("SELECT n.nspname || '.' || c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') "
            "ORDER BY 1")


# =========================================================================== pure: restore


def objects_query() -> str:
    """Tables, views, sequences and types a migration can create: `kind<US>schema<US>name`."""
    schemas = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
               "AND n.nspname NOT LIKE 'pg\\_temp%'")
    not_ext = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')"
    return (
        "SELECT CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'TABLE' WHEN 'v' THEN 'VIEW' "
        "WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' END, n.nspname, c.relname "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND {schemas} AND {not_ext.format(oid='c.oid')} "
        "UNION ALL SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, t.typname "
        "FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        f"WHERE t.typtype IN ('e', 'd', 'r', 'm') AND {schemas} AND {not_ext.format(oid='t.oid')} "
        "ORDER BY 1, 2, 3")


# =========================================================================== command builders


def _socket(db_host: Container) -> str:
    return db_host.path("/var/run/postgresql")


def backup_folder(t: Topology) -> str:
    return t.database_host.path(t.database.backup_dir)


def list_backups_command(folder: str) -> str:
    return (f"cd {sh(folder)} 2>/dev/null || exit 0; for f in *.dump; do [ -f \"$f\" ] || continue; "
            f"m=''; [ -f \"$f{SIDECAR_SUFFIX}\" ] && m=$(base64 -w0 < \"$f{SIDECAR_SUFFIX}\"); "
            f"printf '%s\\t%s\\t%s\\t%s\\n' \"$f\" \"$(stat -c %s -- \"$f\")\" \"$(stat -c %Y -- \"$f\")\" \"$m\"; "
            f"done")


def size_command(path: str) -> str:
    return f"stat -c %s -- {sh(path)}"


def toc_command(path: str) -> str:
    return sh("pg_restore", "--list", path)


def full_read_command(path: str) -> str:
    """Read and decompress every block, writing the SQL nowhere: catches truncation."""
    return sh("pg_restore", "--file=/dev/null", path)


def dump_migrations_command(path: str) -> str:
    return sh("pg_restore", "--data-only", "--table=_prisma_migrations", "--file=-", path)


def delete_backup_command(path: str) -> str:
    return f"rm -f -- {sh(path)} {sh(path + SIDECAR_SUFFIX)}"


def restore_command(t: Topology, db_host: Container, dump: str, prelude_file: str) -> str:
    """One transaction: the prelude, then the dump's own `--clean --if-exists` script."""
    script = sh("pg_restore", "--clean", "--if-exists", "--file=-", dump)
    psql = sh("runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
              "--single-transaction", "-o", "/dev/null", "-h", _socket(db_host), "-p", str(t.database.port),
              "-d", t.database.name)
    return (f"set -o pipefail; {{ cat {sh(prelude_file)} && {script}; }} | {psql}; rc=$?; "
            f"rm -f {sh(prelude_file)}; exit $rc")


def git_migrations_command(paths: cmd.AppPaths, sha: str) -> str:
    return f"git --git-dir={sh(paths.mirror)} ls-tree -r --name-only {sh(sha)} -- prisma/migrations/"


def git_show_command(paths: cmd.AppPaths, sha: str, name: str) -> str:
    return (f"git --git-dir={sh(paths.mirror)} show "
            f"{sh(f'{sha}:prisma/migrations/{name}/migration.sql')} | base64 -w0")


def pre_restore_path(t: Topology, now: datetime) -> str:
    return f"{backup_folder(t)}/{now.strftime('%Y%m%d%H%M%S')}-pre-restore.dump"
