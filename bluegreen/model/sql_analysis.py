"""Which statements of a migration the colour still serving may not survive (drops, renames, type changes, ...)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bluegreen.model.errors import ConfigError

ALLOW_FLAG = "--allow-destructive"


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


def _block_comment_end(sql: str, i: int) -> int:
    """Past the `/* ... */` starting at `i` (PostgreSQL block comments nest)."""
    depth, j, n = 1, i + 2, len(sql)
    while j < n and depth:
        if sql.startswith("/*", j):
            depth, j = depth + 1, j + 2
        elif sql.startswith("*/", j):
            depth, j = depth - 1, j + 2
        else:
            j += 1
    if depth:
        raise ConfigError(f"unterminated /* comment starting on line {_line_of(sql, i)}")
    return j


def _string_token(sql: str, i: int, backslashes: bool) -> _Token:
    """The '...' literal at `i`; E'...' strings (`backslashes`) take backslash escapes."""
    j, n = i + 1, len(sql)
    while True:
        if j >= n:
            raise ConfigError(f"unterminated string starting on line {_line_of(sql, i)}")
        if backslashes and sql[j] == "\\":
            j += 2
        elif sql[j] == "'":
            if j + 1 < n and sql[j + 1] == "'":
                j += 2
            else:
                return _Token("string", sql[i + 1:j], i, j + 1)
        else:
            j += 1


def _quoted_ident_token(sql: str, i: int) -> _Token:
    j = i + 1
    while True:
        end = sql.find('"', j)
        if end < 0:
            raise ConfigError(f"unterminated quoted identifier starting on line {_line_of(sql, i)}")
        if end + 1 < len(sql) and sql[end + 1] == '"':
            j = end + 2
            continue
        return _Token("ident", sql[i + 1:end].replace('""', '"'), i, end + 1)


def _dollar_token(sql: str, i: int, tag: str) -> _Token:
    body_end = sql.find(tag, i + len(tag))
    if body_end < 0:
        raise ConfigError(f"unterminated {tag}-quoted body starting on line {_line_of(sql, i)}")
    return _Token("string", sql[i + len(tag):body_end], i, body_end + len(tag))


def _run_token(sql: str, i: int, kind: str, more: Callable[[str], bool]) -> _Token:
    """A word or a number: characters from `i` while `more` says they continue it."""
    j = i + 1
    while j < len(sql) and more(sql[j]):
        j += 1
    return _Token(kind, sql[i:j].upper() if kind == "word" else sql[i:j], i, j)


def _scan(sql: str) -> list[_Statement]:
    statements: list[_Statement] = []
    tokens: list[_Token] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        token: _Token | None = None
        if ch.isspace():
            i += 1
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            i = _block_comment_end(sql, i)
        elif ch == ";":
            if tokens:
                statements.append(_Statement(sql[tokens[0].start:tokens[-1].end], tuple(tokens)))
                tokens = []
            i += 1
        elif ch == "'":
            # The E of E'...' is the word token just before the quote.
            token = _string_token(sql, i, bool(tokens) and tokens[-1].end == i and tokens[-1].value == "E")
        elif ch == '"':
            token = _quoted_ident_token(sql, i)
        elif ch == "$" and (tag := _dollar_tag(sql, i)) is not None:
            token = _dollar_token(sql, i, tag)
        elif _is_word_start(ch):
            token = _run_token(sql, i, "word", _is_word_char)
        elif ch.isdigit():
            token = _run_token(sql, i, "number", lambda c: c.isalnum() or c in "._")
        else:
            token = _Token("punct", ch, i, i + 1)
        if token is not None:
            tokens.append(token)
            i = token.end
    if tokens:
        statements.append(_Statement(sql[tokens[0].start:tokens[-1].end], tuple(tokens)))
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
