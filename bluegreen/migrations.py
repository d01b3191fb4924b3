"""Prisma migrations against a database both colours share: what is pending, what is broken, and
which statements the colour still serving could not survive.

Both colours run against one PostgreSQL database, so a migration applied for the standby runs
under the live colour's feet. `analyze` flags the statements that break old code (drops, renames,
type changes, new NOT NULL constraints); everything else here mirrors `prisma migrate deploy`'s
own bookkeeping in `_prisma_migrations`, read through psql. All pure.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .errors import BlueGreenError, ConfigError

ALLOW_FLAG = "--allow-destructive"
MIGRATIONS_TABLE = "_prisma_migrations"


class MigrationTableError(BlueGreenError):
    """The `_prisma_migrations` rows could not be read back (psql printed something unexpected)."""


# --------------------------------------------------------------------------- lexing


@dataclass(frozen=True)
class _Token:
    kind: str  # word | ident | string | number | punct
    value: str  # words upper-cased, quoted identifiers unquoted
    start: int
    end: int


@dataclass(frozen=True)
class _Statement:
    text: str
    tokens: tuple[_Token, ...]


def _line_of(sql: str, pos: int) -> int:
    return sql.count("\n", 0, pos) + 1


def _is_word_start(ch: str) -> bool:
    return ch.isalpha() or ch == "_" or ord(ch) > 127


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or ord(ch) > 127


def _dollar_tag(sql: str, pos: int) -> str | None:
    """`$tag$` (or `$$`) starting at pos, else None (`$1` is a parameter, not a quote)."""
    end = pos + 1
    if end < len(sql) and sql[end] == "$":
        return "$$"
    if end < len(sql) and _is_word_start(sql[end]):
        while end < len(sql) and (sql[end].isalnum() or sql[end] == "_" or ord(sql[end]) > 127):
            end += 1
        if end < len(sql) and sql[end] == "$":
            return sql[pos:end + 1]
    return None


def _scan(sql: str) -> list[_Statement]:
    statements: list[_Statement] = []
    tokens: list[_Token] = []

    def close() -> None:
        if tokens:
            statements.append(_Statement(sql[tokens[0].start:tokens[-1].end], tuple(tokens)))
            tokens.clear()

    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            # PostgreSQL block comments nest.
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            if depth:
                raise ConfigError(f"unterminated /* comment starting on line {_line_of(sql, i)}")
            i = j
        elif ch == ";":
            close()
            i += 1
        elif ch == "'":
            # E'...' strings take backslash escapes; the E is the word token just before the quote.
            backslashes = bool(tokens) and tokens[-1].end == i and tokens[-1].value == "E"
            j = i + 1
            while True:
                if j >= n:
                    raise ConfigError(f"unterminated string starting on line {_line_of(sql, i)}")
                if backslashes and sql[j] == "\\":
                    j += 2
                elif sql[j] == "'":
                    if j + 1 < n and sql[j + 1] == "'":
                        j += 2
                    else:
                        break
                else:
                    j += 1
            tokens.append(_Token("string", sql[i + 1:j], i, j + 1))
            i = j + 1
        elif ch == '"':
            j = i + 1
            while True:
                end = sql.find('"', j)
                if end < 0:
                    raise ConfigError(f"unterminated quoted identifier starting on line {_line_of(sql, i)}")
                if end + 1 < n and sql[end + 1] == '"':
                    j = end + 2
                    continue
                break
            tokens.append(_Token("ident", sql[i + 1:end].replace('""', '"'), i, end + 1))
            i = end + 1
        elif ch == "$" and (tag := _dollar_tag(sql, i)) is not None:
            body_end = sql.find(tag, i + len(tag))
            if body_end < 0:
                raise ConfigError(f"unterminated {tag}-quoted body starting on line {_line_of(sql, i)}")
            tokens.append(_Token("string", sql[i + len(tag):body_end], i, body_end + len(tag)))
            i = body_end + len(tag)
        elif _is_word_start(ch):
            j = i + 1
            while j < n and _is_word_char(sql[j]):
                j += 1
            tokens.append(_Token("word", sql[i:j].upper(), i, j))
            i = j
        elif ch.isdigit():
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "._"):
                j += 1
            tokens.append(_Token("number", sql[i:j], i, j))
            i = j
        else:
            tokens.append(_Token("punct", ch, i, i + 1))
            i += 1
    close()
    return statements


def split_statements(sql: str) -> list[str]:
    """The statements of a SQL script, split on top-level semicolons.

    Quotes, quoted identifiers, `--` and nested `/* */` comments and dollar-quoted bodies are
    respected; comments before a statement and comment-only pieces are left out.
    """
    return [s.text for s in _scan(sql)]


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class Finding:
    file: str
    statement: str
    kind: str
    explanation: str


DROP_TABLE = "drop table"
DROP_COLUMN = "drop column"
RENAME_TABLE = "rename table"
RENAME_COLUMN = "rename column"
ALTER_TYPE = "alter column type"
ADD_NOT_NULL = "add NOT NULL column without default"
SET_NOT_NULL = "set NOT NULL"
DROP_SCHEMA = "drop schema"
TRUNCATE = "truncate"
DELETE_ROWS = "delete rows"
DROP_VIEW = "drop view"
DROP_TYPE = "drop type"
RENAME_TYPE_VALUE = "rename enum value"
RENAME_TYPE = "rename type"
DYNAMIC_SQL = "dynamic SQL"

_CONSTRAINT_WORDS = {"CONSTRAINT", "PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "EXCLUDE"}
_SERIAL_TYPES = {"SERIAL", "BIGSERIAL", "SMALLSERIAL", "SERIAL2", "SERIAL4", "SERIAL8"}


def _is(tok: _Token | None, *words: str) -> bool:
    return tok is not None and tok.kind == "word" and tok.value in words


def _at(tokens: Sequence[_Token], i: int) -> _Token | None:
    return tokens[i] if 0 <= i < len(tokens) else None


def _name(tokens: Sequence[_Token], i: int) -> tuple[str, int]:
    """A possibly schema-qualified name starting at i, and the index after it."""
    parts: list[str] = []
    while i < len(tokens) and tokens[i].kind in ("word", "ident"):
        tok = tokens[i]
        parts.append(f'"{tok.value}"' if tok.kind == "ident" else tok.value.lower())
        if _at(tokens, i + 1) is not None and tokens[i + 1].value == "." and tokens[i + 1].kind == "punct":
            i += 2
            continue
        i += 1
        break
    return ".".join(parts), i


def _names(tokens: Sequence[_Token], i: int) -> list[str]:
    names: list[str] = []
    while i < len(tokens):
        if _is(tokens[i], "CASCADE", "RESTRICT", "CONTINUE", "RESTART", "IDENTITY"):
            break
        name, i = _name(tokens, i)
        if not name:
            i += 1
            continue
        names.append(name)
    return names


def _skip(tokens: Sequence[_Token], i: int, *words: str) -> int:
    """Skip the optional keyword sequence `words` (like IF EXISTS) if it is there."""
    if all(_is(_at(tokens, i + k), w) for k, w in enumerate(words)):
        return i + len(words)
    return i


def _split_actions(tokens: Sequence[_Token]) -> list[list[_Token]]:
    actions: list[list[_Token]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.kind == "punct" and tok.value == "(":
            depth += 1
        elif tok.kind == "punct" and tok.value == ")":
            depth -= 1
        elif tok.kind == "punct" and tok.value == "," and depth == 0:
            actions.append([])
            continue
        actions[-1].append(tok)
    return [a for a in actions if a]


def _has_sequence(tokens: Sequence[_Token], *words: str) -> bool:
    return any(all(_is(_at(tokens, i + k), w) for k, w in enumerate(words)) for i in range(len(tokens)))


_WHY = {
    DROP_TABLE: "the live colour still queries {target}; its requests fail the moment it is gone",
    DROP_COLUMN: "the live colour's queries still name {target} (Prisma lists every column it selects "
                 "or inserts), so they fail once it is dropped",
    RENAME_TABLE: "the live colour still uses the old name {target}; every query on it fails after "
                  "the rename",
    RENAME_COLUMN: "the live colour still uses the old column name {target}; its queries fail after "
                   "the rename",
    ALTER_TYPE: "changing the type of {target} rewrites the table under an exclusive lock, and the live "
                "colour still reads and writes values of the old type",
    ADD_NOT_NULL: "{target} is NOT NULL with no default: the statement fails on a table that has rows, and "
                  "the live colour's inserts, which do not know the column, violate the constraint",
    SET_NOT_NULL: "the live colour may still insert rows without a value for {target}, which then fail "
                  "(and the check scans the whole table under an exclusive lock)",
    DROP_SCHEMA: "everything in schema {target} disappears under the live colour",
    TRUNCATE: "it deletes every row of {target} that the live colour is serving",
    DELETE_ROWS: "it deletes rows of {target} that the live colour may still be serving (and a "
                 "restore is the only way back)",
    DROP_VIEW: "the live colour may still query the view {target}; its queries fail once it is gone",
    DROP_TYPE: "columns and queries of the live colour may still use the type {target}",
    RENAME_TYPE_VALUE: "the live colour still reads and writes the old value of {target}; its "
                       "writes fail and its reads see a value it does not know",
    RENAME_TYPE: "the live colour still uses the old type name {target}",
    DYNAMIC_SQL: "{target} builds or runs SQL at run time, which cannot be checked before it runs; "
                 "treat it as destructive",
}


def _finding(file: str, stmt: _Statement, kind: str, target: str) -> Finding:
    return Finding(file=file, statement=stmt.text, kind=kind, explanation=_WHY[kind].format(target=target))


def _alter_table(file: str, stmt: _Statement) -> list[Finding]:
    toks = stmt.tokens
    i = _skip(toks, 2, "IF", "EXISTS")
    i = _skip(toks, i, "ONLY")
    table, i = _name(toks, i)
    if not table:
        return []
    if _at(toks, i) is not None and toks[i].value == "*":
        i += 1
    found: list[Finding] = []
    for action in _split_actions(toks[i:]):
        found.extend(_alter_action(file, stmt, table, action))
    return found


def _alter_action(file: str, stmt: _Statement, table: str, a: list[_Token]) -> list[Finding]:
    head = _at(a, 0)
    if _is(head, "RENAME"):
        if _is(_at(a, 1), "TO"):
            new, _ = _name(a, 2)
            return [_finding(file, stmt, RENAME_TABLE, f"{table} (renamed to {new})")]
        if _is(_at(a, 1), "CONSTRAINT"):
            return []
        j = _skip(a, 1, "COLUMN")
        old, j = _name(a, j)
        new, _ = _name(a, j + 1)
        return [_finding(file, stmt, RENAME_COLUMN, f"{table}.{old} (renamed to {new})")]
    if _is(head, "DROP"):
        if _is(_at(a, 1), "CONSTRAINT"):
            return []
        j = _skip(a, 1, "COLUMN")
        j = _skip(a, j, "IF", "EXISTS")
        column, _ = _name(a, j)
        return [_finding(file, stmt, DROP_COLUMN, f"{table}.{column}")]
    if _is(head, "ALTER"):
        if _is(_at(a, 1), "CONSTRAINT"):
            return []
        j = _skip(a, 1, "COLUMN")
        column, j = _name(a, j)
        rest = a[j:]
        if _is(_at(rest, 0), "TYPE") or _has_sequence(rest[:3], "SET", "DATA", "TYPE"):
            return [_finding(file, stmt, ALTER_TYPE, f"{table}.{column}")]
        if _has_sequence(rest[:3], "SET", "NOT", "NULL"):
            return [_finding(file, stmt, SET_NOT_NULL, f"{table}.{column}")]
        return []
    if _is(head, "ADD"):
        if _is(_at(a, 1), *_CONSTRAINT_WORDS):
            return []
        j = _skip(a, 1, "COLUMN")
        j = _skip(a, j, "IF", "NOT", "EXISTS")
        column, j = _name(a, j)
        definition = a[j:]
        not_null = _has_sequence(definition, "NOT", "NULL") or _has_sequence(definition, "PRIMARY", "KEY")
        filled = (_has_sequence(definition, "DEFAULT") or _has_sequence(definition, "GENERATED")
                  or _is(_at(definition, 0), *_SERIAL_TYPES))
        if not_null and not filled:
            return [_finding(file, stmt, ADD_NOT_NULL, f"{table}.{column}")]
    return []


def analyze(name: str, sql: str) -> list[Finding]:
    """Statements of one migration file that the live colour could not survive."""
    try:
        statements = _scan(sql)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    found: list[Finding] = []
    for stmt in statements:
        t = stmt.tokens
        if _is(_at(t, 0), "DROP") and _is(_at(t, 1), "TABLE"):
            targets = _names(t, _skip(t, 2, "IF", "EXISTS"))
            found.append(_finding(name, stmt, DROP_TABLE, ", ".join(targets) or "the table"))
        elif _is(_at(t, 0), "DROP") and _is(_at(t, 1), "SCHEMA"):
            targets = _names(t, _skip(t, 2, "IF", "EXISTS"))
            found.append(_finding(name, stmt, DROP_SCHEMA, ", ".join(targets) or "the schema"))
        elif _is(_at(t, 0), "TRUNCATE"):
            targets = _names(t, _skip(t, _skip(t, 1, "TABLE"), "ONLY"))
            found.append(_finding(name, stmt, TRUNCATE, ", ".join(targets) or "the table"))
        elif _is(_at(t, 0), "ALTER") and _is(_at(t, 1), "TABLE"):
            found.extend(_alter_table(name, stmt))
        else:
            found.extend(_more_findings(name, stmt))
    return found


def _more_findings(name: str, stmt: _Statement) -> list[Finding]:
    """DELETE, DROP VIEW / TYPE, ALTER TYPE renames and dynamic SQL (DO, EXECUTE, function bodies)."""
    t = stmt.tokens
    if _is(_at(t, 0), "WITH") and any(_is(tok, "DELETE") for tok in t):
        return [_finding(name, stmt, DELETE_ROWS, "a table (DELETE inside WITH)")]
    if _is(_at(t, 0), "DELETE") and _is(_at(t, 1), "FROM"):
        target, _ = _name(t, _skip(t, 2, "ONLY"))
        return [_finding(name, stmt, DELETE_ROWS, target or "the table")]
    if _is(_at(t, 0), "DROP") and (_is(_at(t, 1), "VIEW") or _has_sequence(t[1:3], "MATERIALIZED", "VIEW")):
        start = 2 if _is(_at(t, 1), "VIEW") else 3
        targets = _names(t, _skip(t, start, "IF", "EXISTS"))
        return [_finding(name, stmt, DROP_VIEW, ", ".join(targets) or "the view")]
    if _is(_at(t, 0), "DROP") and _is(_at(t, 1), "TYPE", "DOMAIN"):
        targets = _names(t, _skip(t, 2, "IF", "EXISTS"))
        return [_finding(name, stmt, DROP_TYPE, ", ".join(targets) or "the type")]
    if _is(_at(t, 0), "ALTER") and _is(_at(t, 1), "TYPE"):
        type_name, i = _name(t, 2)
        if _is(_at(t, i), "RENAME") and _is(_at(t, i + 1), "VALUE"):
            old = _at(t, i + 2)
            value = f"{type_name} ({old.value!r})" if old is not None else type_name
            return [_finding(name, stmt, RENAME_TYPE_VALUE, value)]
        if _is(_at(t, i), "RENAME") and _is(_at(t, i + 1), "TO"):
            return [_finding(name, stmt, RENAME_TYPE, type_name)]
        return []
    if _is(_at(t, 0), "DO"):
        body = next((tok for tok in t[1:] if tok.kind == "string"), None)
        return [_finding(name, stmt, DYNAMIC_SQL, "a DO block"), *_inner(name, stmt, body)]
    if _is(_at(t, 0), "EXECUTE"):
        return [_finding(name, stmt, DYNAMIC_SQL, "EXECUTE of a prepared statement")]
    if _is(_at(t, 0), "CREATE") and any(_is(tok, "FUNCTION", "PROCEDURE") for tok in t[1:4]):
        bodies = [tok for tok in t if tok.kind == "string" and "EXECUTE" in tok.value.upper()]
        if any(_dynamic_body(tok.value) for tok in bodies):
            return [_finding(name, stmt, DYNAMIC_SQL, "a function that runs EXECUTE")]
    return []


def _dynamic_body(body: str) -> bool:
    try:
        return any(_is(tok, "EXECUTE") for s in _scan(body) for tok in s.tokens)
    except ConfigError:
        return True  # unreadable: assume the worst


def _inner(name: str, outer: _Statement, body: _Token | None) -> list[Finding]:
    """What a DO block's body visibly does: its statements and the strings it EXECUTEs.

    Reported against the outer statement; a body that does not lex adds nothing (the DO block is
    already flagged as dynamic SQL)."""
    if body is None:
        return []
    found: list[Finding] = []
    try:
        statements = _scan(body.value)
    except ConfigError:
        return []
    for stmt in statements:
        texts = [stmt.text]
        # PL/pgSQL puts statements after BEGIN, THEN, ELSE or LOOP: look at each such tail too.
        texts += [body.value[stmt.tokens[k + 1].start:stmt.tokens[-1].end]
                  for k, tok in enumerate(stmt.tokens[:-1]) if _is(tok, "BEGIN", "THEN", "ELSE", "LOOP")]
        texts += [tok.value for k, tok in enumerate(stmt.tokens)
                  if tok.kind == "string" and any(_is(p, "EXECUTE") for p in stmt.tokens[:k])]
        for text in texts:
            with contextlib.suppress(ConfigError):
                for f in analyze(name, text):
                    if f.kind != DYNAMIC_SQL:
                        found.append(Finding(file=name, statement=outer.text, kind=f.kind,
                                             explanation=f.explanation))
    return found


def _one_line(statement: str, limit: int = 160) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def explain(findings: Sequence[Finding]) -> str:
    """One message for the user: each file and statement, why, and how to do it safely."""
    if not findings:
        return ""
    by_statement: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        by_statement.setdefault((f.file, f.statement), []).append(f)
    files = sorted({f.file for f in findings})
    noun = "statement" if len(by_statement) == 1 else "statements"
    lines = [f"refusing to migrate: {len(by_statement)} {noun} in {', '.join(files)} would break the "
             f"colour that is still live (both colours share one database):"]
    for (file, statement), group in by_statement.items():
        lines.append(f"  - {file}: {_one_line(statement)}")
        lines.extend(f"      {f.kind}: {f.explanation}" for f in group)
    lines += [
        "Change the schema in expand/contract steps instead, so every step works for the old and the "
        "new code at once:",
        "  1. expand: add the new table or column (nullable, or NOT NULL with a DEFAULT) and leave the "
        "old one in place;",
        "  2. deploy code that writes both the old and the new shape and reads the new one;",
        "  3. backfill the new shape from the old data;",
        "  4. switch, and let the old colour go idle;",
        "  5. contract in a later release: drop or rename the old table or column once no colour uses it.",
        f"If you have checked that the live colour does not use what changes (or you accept its errors "
        f"until the switch), rerun the deploy with {ALLOW_FLAG}.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- _prisma_migrations


@dataclass(frozen=True)
class AppliedRow:
    """One row of `_prisma_migrations` (timestamps as ISO UTC text, None when NULL)."""

    id: str
    checksum: str
    migration_name: str
    started_at: str | None
    finished_at: str | None
    rolled_back_at: str | None
    applied_steps_count: int
    logs: str = ""

    @property
    def name(self) -> str:
        return self.migration_name

    @property
    def failed(self) -> bool:
        return self.finished_at is None and self.rolled_back_at is None

    @property
    def applied(self) -> bool:
        return self.finished_at is not None and self.rolled_back_at is None


def pending(local_names: Iterable[str], applied_rows: Iterable[AppliedRow]) -> list[str]:
    """Migration directories Prisma would apply: no row of that name that was not rolled back."""
    present = {r.migration_name for r in applied_rows if r.rolled_back_at is None}
    return sorted({n for n in local_names if n not in present})


def failed(applied_rows: Iterable[AppliedRow]) -> list[AppliedRow]:
    """Rows that block every deploy (Prisma's P3009) until `prisma migrate resolve`."""
    return [r for r in applied_rows if r.failed]


def applied_not_local(local_names: Iterable[str], applied_rows: Iterable[AppliedRow]) -> list[str]:
    """Migrations the database has but the release does not: that code is older than the schema."""
    local = set(local_names)
    return sorted({r.migration_name for r in applied_rows if r.applied and r.migration_name not in local})


def migration_checksum(sql: str | bytes) -> str:
    data = sql.encode() if isinstance(sql, str) else sql
    return hashlib.sha256(data).hexdigest()


def checksum_matches(sql: str | bytes, checksum: str) -> bool:
    """Like Prisma, a file checked out with other line endings (git autocrlf) still matches."""
    data = sql.encode() if isinstance(sql, str) else sql
    lf = data.replace(b"\r\n", b"\n")
    variants = (data, lf, lf.replace(b"\n", b"\r\n"))
    wanted = checksum.strip().lower()
    return any(migration_checksum(v) == wanted for v in variants)


def checksum_drift(local: Mapping[str, str | bytes], applied_rows: Iterable[AppliedRow]) -> list[str]:
    """Applied migrations whose file changed since (Prisma itself never notices)."""
    drifted = {r.migration_name for r in applied_rows
               if r.applied and r.migration_name in local
               and not checksum_matches(local[r.migration_name], r.checksum)}
    return sorted(drifted)


# Logs are read hex-encoded, so no field can hold a newline or a separator: the rows parse the same
# with psql's NUL separators (PSQL_ARGS, -z -0) or with `-A -t -F $'\x1f'` and newline records.
PSQL_ARGS = ("--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--field-separator-zero",
             "--record-separator-zero", "--set", "ON_ERROR_STOP=1")
UNIT_SEPARATOR = "\x1f"
_COLUMNS = 8
_TS = "YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\""


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def applied_rows_query(schema: str = "public") -> str:
    """One SELECT (fits `psql -c`) of every `_prisma_migrations` row, oldest first.

    On a database Prisma never migrated psql fails with `relation ... does not exist`; give its
    stderr and exit code to `parse_applied`, which reads that as nothing applied.
    """
    table = f"{_quote_ident(schema)}.{_quote_ident(MIGRATIONS_TABLE)}"

    def ts(column: str) -> str:
        return f"to_char({column} AT TIME ZONE 'UTC', '{_TS}')"

    return (f"SELECT id, checksum, migration_name, {ts('started_at')}, {ts('finished_at')}, "
            f"{ts('rolled_back_at')}, applied_steps_count, "
            f"encode(convert_to(coalesce(logs, ''), 'UTF8'), 'hex') "
            f"FROM {table} ORDER BY started_at, migration_name")


def _missing_table(text: str) -> bool:
    return "relation" in text and f'{MIGRATIONS_TABLE}" does not exist' in text


def _unexpected(detail: str) -> MigrationTableError:
    return MigrationTableError(f"unexpected psql output reading {MIGRATIONS_TABLE}: {detail}")


def _records(stdout: str) -> list[list[str]]:
    if "\0" in stdout:
        fields = stdout.split("\0")
        if len(fields) % _COLUMNS == 1 and fields[-1].strip() == "":
            fields = fields[:-1]  # the separator psql prints after the last record
        if len(fields) % _COLUMNS:
            raise _unexpected(f"{len(fields)} fields is not a whole number of {_COLUMNS}-column rows")
        return [fields[k:k + _COLUMNS] for k in range(0, len(fields), _COLUMNS)]
    records = [line.split(UNIT_SEPARATOR) for line in stdout.split("\n") if line.strip()]
    for record in records:
        if len(record) != _COLUMNS:
            raise _unexpected(f"a row of {len(record)} fields instead of {_COLUMNS} "
                              f"(run psql with -A -t and the NUL or unit separator)")
    return records


def parse_applied(stdout: str, stderr: str = "", exit_code: int = 0) -> list[AppliedRow]:
    """The rows printed for `applied_rows_query()`; a missing table means nothing was applied."""
    if exit_code != 0:
        if _missing_table(stderr) or _missing_table(stdout):
            return []
        detail = (stderr.strip() or stdout.strip() or "no output")[-500:]
        raise MigrationTableError(f"reading {MIGRATIONS_TABLE} failed (psql exit code {exit_code}): "
                                  f"{detail}")
    if UNIT_SEPARATOR not in stdout and "\0" not in stdout and _missing_table(stdout):
        return []  # the error text, from a caller that merged stderr into stdout
    rows: list[AppliedRow] = []
    for rid, checksum, name, started, finished, rolled_back, steps, logs_hex in _records(stdout):
        try:
            step_count = int(steps)
            logs = bytes.fromhex(logs_hex).decode("utf-8", errors="replace")
        except ValueError:
            raise _unexpected(f"the row of {name!r} does not parse (applied_steps_count {steps!r})") from None
        rows.append(AppliedRow(id=rid, checksum=checksum, migration_name=name,
                               started_at=started or None, finished_at=finished or None,
                               rolled_back_at=rolled_back or None, applied_steps_count=step_count,
                               logs=logs))
    return rows


# --------------------------------------------------------------------------- what the deploy says

# Prisma's own words when a failed migration blocks `migrate deploy` (P3009, schema-engine's
# `FoundFailedMigrations`), checked against the real CLI in tests/integration/test_prisma_real.py.
P3009_TEXT = ("migrate found failed migrations in the target database, new migrations will not be "
              "applied. Read more about how to resolve migration issues in a production database: "
              "https://pris.ly/d/migrate-resolve")


def _indent(text: str, prefix: str = "    ", limit: int = 1500) -> str:
    text = text.strip()
    if len(text) > limit:
        text = text[:limit] + " ..."
    return "\n".join(prefix + line for line in text.splitlines()) if text else f"{prefix}(no log)"


def blocked_message(failed_rows: Sequence[AppliedRow], where: str) -> str:
    """Why a deploy stops on a failed migration, in Prisma's words, and the commands that unblock it.

    `where` names the release directory (and host) the resolve commands run in.
    """
    first = failed_rows[0]
    lines = ["Prisma P3009: " + P3009_TEXT]
    for row in failed_rows:
        lines.append(f"The `{row.name}` migration started at {row.started_at or 'an unknown time'} failed")
        lines.append("Prisma's log of that attempt (_prisma_migrations.logs):")
        lines.append(_indent(row.logs))
    lines += [
        "Nothing is applied until it is resolved. Check what the failed migration left in the database "
        "(PostgreSQL ran the file as one transaction unless it has its own BEGIN/COMMIT), then record "
        f"the outcome from {where}:",
        f"  npx prisma migrate resolve --rolled-back \"{first.name}\"   # its changes are not in the "
        "database: a fixed file runs again at the next deploy",
        f"  npx prisma migrate resolve --applied \"{first.name}\"       # you completed its changes by hand",
    ]
    return "\n".join(lines)


def parse_checksums(stdout: str) -> dict[str, str]:
    """`name sha256` lines (commands.migration_checksums) as {name: checksum}."""
    result: dict[str, str] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[1]) == 64:
            result[parts[0]] = parts[1].lower()
    return result


def edited_after_applying(local_checksums: Mapping[str, str], applied_rows: Iterable[AppliedRow]) -> list[str]:
    """Applied migrations whose migration.sql in the release no longer has the checksum Prisma
    recorded when it ran the file. `migrate deploy` never notices; the schema may then differ from
    what the release's migration files say it is."""
    return sorted({r.migration_name for r in applied_rows
                   if r.applied and r.migration_name in local_checksums
                   and local_checksums[r.migration_name].strip().lower() != r.checksum.strip().lower()})


def edited_message(names: Sequence[str]) -> str:
    return (f"{len(names)} applied migration(s) edited after they ran: {', '.join(names)} (the file's "
            "SHA-256 differs from _prisma_migrations.checksum). Prisma does not re-run or check them; "
            "put the change in a new migration instead, or restore the file.")
