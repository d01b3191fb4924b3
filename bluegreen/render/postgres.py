"""The app's database role and database, and the pg_hba.conf rules that let the app hosts in.

`render_database_sql` is a psql script (it uses `\\gexec`, since CREATE DATABASE cannot run inside
a DO block) meant for `runuser -u postgres -- psql -X -f -`; it only creates what is missing (a role
with the given password, a database closed to PUBLIC): an existing role and database, with their
password, owner and grants, are adopted untouched, so running it again changes nothing. `render_pg_hba` is a block that
`merge_managed_block` places at the top of the host's pg_hba.conf, between markers, so the rest
of the file stays the administrator's.
"""

from __future__ import annotations

from bluegreen.model.errors import ConfigError
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.topology import COLORS, Topology
from bluegreen.render import GENERATED_BY

BEGIN_MARKER = "# BEGIN bluegreen managed block"
END_MARKER = "# END bluegreen managed block"


def sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: str) -> str:
    """A string literal that means the same whatever `standard_conforming_strings` says."""
    if "\x00" in value:
        raise ConfigError("a value for PostgreSQL cannot contain a NUL character")
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    return f"E'{escaped}'"


def _require_user(t: Topology) -> None:
    if not t.database.user:
        raise ConfigError("set database.user: the user in DATABASE_URL of the app's .env "
                          f"(`bluegreen adopt --stack {t.stack}` reads it from the estate)")


def render_database_sql(t: Topology, password: Sensitive) -> str:
    _require_user(t)
    if not isinstance(password, Sensitive):
        raise ConfigError("the database password must be passed as a Sensitive value")
    if not password.reveal():
        raise ConfigError(f"the password of database user {t.database.user!r} is empty")
    user, db = t.database.user, t.database.name
    user_id, db_id = sql_identifier(user), sql_identifier(db)
    return "\n".join([
        f"-- {GENERATED_BY}",
        f"-- stack {t.stack}: role {user} and database {db}",
        r"\set ON_ERROR_STOP on",
        "",
        # An existing role and database are adopted as they are: their password, owner and grants
        # belong to the estate (the apps' .env holds that password). Only what is missing is
        # created, with the password and the PUBLIC revoke a new database gets.
        f"SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {sql_literal(user)}) "
        "AS bluegreen_new_role,",
        f"       NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = {sql_literal(db)}) "
        "AS bluegreen_new_db \\gset",
        r"\if :bluegreen_new_role",
        # The password statement runs in its own transaction with statement logging off, so it
        # never reaches the server log, even when it fails.
        "BEGIN;",
        "SET LOCAL log_statement = 'none';",
        "SET LOCAL log_min_duration_statement = -1;",
        "SET LOCAL log_min_error_statement = 'panic';",
        "SET LOCAL password_encryption = 'scram-sha-256';",
        f"CREATE ROLE {user_id} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
        f"PASSWORD {sql_literal(password.reveal())};",
        "COMMIT;",
        r"\endif",
        r"\if :bluegreen_new_db",
        f"CREATE DATABASE {db_id} OWNER {user_id};",
        # Only the owner (and superusers) may connect: other roles on this server see nothing.
        f"REVOKE CONNECT, TEMPORARY ON DATABASE {db_id} FROM PUBLIC;",
        r"\endif",
        "",
    ])


# PostgreSQL's md5 method accepts a password stored as an MD5 hash (challenge-response) and one
# stored as SCRAM (it then runs SCRAM): "If md5 is specified ... but the user's password is
# encrypted for SCRAM, then SCRAM-based authentication will automatically be chosen instead"
# (PostgreSQL 15 documentation, 21.5 "Password Authentication"). scram-sha-256 accepts only SCRAM.
ADOPTED_DATABASE_METHOD = "md5"
CREATED_DATABASE_METHOD = "scram-sha-256"


def hba_method(t: Topology) -> str:
    """The password method of the managed rules. On an adopted database the app's role may well
    have an MD5-stored password (PostgreSQL before 14 stored them so by default): a scram-sha-256
    rule placed first would lock it out, so the rule keeps accepting what the role uses (md5, which
    still runs SCRAM for a SCRAM-stored password). A database the program creates has only roles it
    created with SCRAM (render_database_sql), and gets scram-sha-256."""
    return ADOPTED_DATABASE_METHOD if t.database_host.existing else CREATED_DATABASE_METHOD


def render_pg_hba(t: Topology) -> str:
    """Rules for the managed block: local admin by peer, the app user from exactly the app hosts.

    Hosts on loopback addresses (the lab) reach a loopback server from 127.0.0.1, whatever
    address they listen on, so for them 127.0.0.1 is admitted too (still by password).
    """
    _require_user(t)
    db, user = t.database.name, t.database.user
    sources = [f"{t.app_host(color).interface.ip}/32" for color in COLORS]
    if any(t.app_host(color).interface.ip.is_loopback for color in COLORS):
        sources.append("127.0.0.1/32")
    method = hba_method(t)
    rows = [("local", "all", "postgres", "", "peer")]
    rows += [("host", db, user, source, method) for source in dict.fromkeys(sources)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"# {GENERATED_BY}"]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[4]]
        lines.append(" ".join(cells))
    return "\n".join(lines) + "\n"


def merge_managed_block(existing: str, block: str) -> str:
    """`existing` with the managed block replaced by `block`, or `block` placed first if absent.

    First, because pg_hba.conf is first-match: a catch-all rule further down must not shadow ours.
    Text outside the markers is kept byte for byte.
    """
    for marker in (BEGIN_MARKER, END_MARKER):
        if marker in block:
            raise ConfigError(f"the block to merge must not contain the marker {marker!r}")
    managed = f"{BEGIN_MARKER}\n{block.rstrip(chr(10))}\n{END_MARKER}\n"
    lines = existing.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN_MARKER]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == END_MARKER]
    if not begins and not ends:
        return managed + existing
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise ConfigError(
            f"the file has {len(begins)} {BEGIN_MARKER!r} and {len(ends)} {END_MARKER!r} lines in the "
            "wrong order; fix the markers by hand so there is one pair, then retry")
    return "".join(lines[:begins[0]]) + managed + "".join(lines[ends[0] + 1:])
