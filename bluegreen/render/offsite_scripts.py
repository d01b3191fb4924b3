"""The shell of the off-host copies: the bodies `render.offsite` puts in each script (pure text).

`PRUNE_FUNCTIONS` is the shell twin of `model.dumps.retention` (tests/unit/test_offsite.py runs
both over the same dumps). Placeholders `@DUMP@`, `@MISMATCH@`, `@UNREACHABLE@` are filled in by
`render.offsite`.
"""

from __future__ import annotations

DUMP_NAME = r"^[0-9]{14}-[a-z0-9-]+\.dump$"  # the names this tool gives its dumps

PRUNE_FUNCTIONS = r"""# The retention class of one dump of ours (model.dumps.retention_class).
dump_class() {  # path
  local sidecar="$1.json"
  if [ -f "$sidecar" ] && grep -Eq '"verified"[[:space:]]*:[[:space:]]*true' "$sidecar"; then
    if grep -Eq '"migrated"[[:space:]]*:[[:space:]]*true' "$sidecar"; then echo good; return; fi
    if grep -Eq '"kind"[[:space:]]*:[[:space:]]*"scheduled"' "$sidecar"; then echo scheduled; return; fi
  fi
  echo other
}

# Keep the newest $1 dumps of each class in directory $2 (names start with a UTC timestamp);
# prints `pruned NAME` per dump deleted. Files of other names are never touched.
prune_dumps() {  # keep dir
  local keep=$1 dir=$2 f class
  local -A seen=()
  while IFS= read -r f; do
    [ -n "$f" ] || continue
    class=$(dump_class "$dir/$f")
    seen[$class]=$(( ${seen[$class]:-0} + 1 ))
    if [ "${seen[$class]}" -gt "$keep" ]; then
      rm -f -- "$dir/$f" "$dir/$f.json" "$dir/$f.sha256" "$dir/$f.json.sha256"
      echo "pruned $f"
    fi
  done < <(ls -1 -- "$dir" 2>/dev/null | grep -E '""" + DUMP_NAME + r"""' | sort -r)
}"""

RECEIVE_BODY = r"""
fail() { echo "bluegreen receive: $*" >&2; exit 2; }
valid_file() {  # a dump of ours or its sidecar, nothing else
  [[ $1 =~ @DUMP@ || ${1%.json} =~ @DUMP@ && $1 == *.json ]] || fail "refusing file name ${1@Q}"
}
valid_sum() { [[ $1 =~ ^[0-9a-f]{64}$ ]] || fail "refusing checksum ${1@Q}"; }

# stdin -> $2/$1, kept only when its sha256 is $3; its checksum recorded beside it as $1.sha256.
store() {  # name dir sha256
  local name=$1 dir=$2 want=$3 tmp got
  mkdir -p -- "$dir"
  tmp="$dir/.$name.part.$$"
  trap 'rm -f -- "$tmp"' EXIT
  cat > "$tmp"
  got=$(sha256sum -- "$tmp" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    echo "bluegreen receive: checksum mismatch for $name: sent $want, received $got; not stored" >&2
    exit @MISMATCH@
  fi
  sync -- "$tmp" 2>/dev/null || true
  mv -f -- "$tmp" "$dir/$name"
  printf '%s  %s\n' "$got" "$name" > "$dir/.$name.sha256.part"
  mv -f -- "$dir/.$name.sha256.part" "$dir/$name.sha256"
  trap - EXIT
  echo "stored $name $got"
}

list_dumps() {
  local f s m
  cd -- "$DIR" 2>/dev/null || return 0
  for f in *.dump; do
    [ -f "$f" ] || continue
    s=''; [ -f "$f.sha256" ] && s=$(cut -d' ' -f1 < "$f.sha256")
    m=''; [ -f "$f.json" ] && m=$(base64 -w0 < "$f.json")
    printf '%s\t%s\t%s\t%s\t%s\n' "$f" "$(stat -c %s -- "$f")" "$(stat -c %Y -- "$f")" "$s" "$m"
  done
}

verify() {  # name: the file's bytes against the checksum recorded when it arrived
  local name=$1 want got
  valid_file "$name"
  [ -f "$DIR/$name" ] || fail "$name is not here"
  [ -f "$DIR/$name.sha256" ] || { echo "unchecked $name (no checksum recorded)"; exit @MISMATCH@; }
  want=$(cut -d' ' -f1 < "$DIR/$name.sha256")
  got=$(sha256sum -- "$DIR/$name" | cut -d' ' -f1)
  if [ "$got" = "$want" ]; then echo "ok $name $got"; return; fi
  echo "mismatch $name recorded $want now $got"
  exit @MISMATCH@
}

# Copies of the HAProxy host's own files: `journal` (state.json) and `tls` (the certificate bundle,
# which no code can recreate), each kept while it changes, the newest `keep` of them.
copy_dir() { case $1 in journal) echo "$DIR/journal" ;; tls) echo "$DIR/tls" ;; *) fail "kind ${1@Q}" ;; esac; }
copy_pattern() {
  case $1 in
    journal) echo '^[0-9]{23}-[0-9a-f]{8}-state\.json$' ;;
    tls) echo '^[0-9]{23}-[0-9a-f]{8}-bundle\.pem$' ;;
  esac
}

copy_put() {  # kind sha256: a copy (stdin), unless the newest copy already holds it
  local kind=$1 want=$2 dir pattern newest name keep=$JOURNAL_KEEP
  valid_sum "$want"
  dir=$(copy_dir "$kind"); pattern=$(copy_pattern "$kind")
  [ "$kind" = tls ] && keep=3
  newest=$({ ls -1 -- "$dir" 2>/dev/null | grep -E "$pattern" || true; } | sort | tail -n 1)
  if [ -n "$newest" ] && [ "$(cut -d' ' -f1 < "$dir/$newest.sha256" 2>/dev/null)" = "$want" ]; then
    cat > /dev/null
    echo "present $newest"
    return
  fi
  # UTC time to the nanosecond first: copies sort by name in the order they came.
  name="$(date -u +%Y%m%d%H%M%S%N)-${want:0:8}-$([ "$kind" = tls ] && echo bundle.pem || echo state.json)"
  store "$name" "$dir" "$want"
  { ls -1 -- "$dir" | grep -E "$pattern" || true; } | sort -r | tail -n +$((keep + 1)) \
    | while IFS= read -r old; do rm -f -- "$dir/$old" "$dir/$old.sha256"; done
}

copy_list() {  # kind: name<TAB>size<TAB>sha256, oldest first
  local dir pattern f
  dir=$(copy_dir "$1"); pattern=$(copy_pattern "$1")
  { ls -1 -- "$dir" 2>/dev/null | grep -E "$pattern" || true; } | sort | while IFS= read -r f; do
    [ -f "$dir/$f.sha256" ] || continue
    printf '%s\t%s\t%s\n' "$f" "$(stat -c %s -- "$dir/$f")" "$(cut -d' ' -f1 < "$dir/$f.sha256")"
  done
}

copy_get() {  # kind name
  local dir
  dir=$(copy_dir "$1")
  [[ $2 =~ $(copy_pattern "$1") ]] || fail "refusing file name ${2@Q}"
  cat -- "$dir/$2"
}

main() {
  local role=${1:-}
  shift || true
  if [ "$role" != operator ]; then
    # A pushing host's key: the command it asked for is data, never a shell line.
    local -a words=()
    read -r -a words <<< "${SSH_ORIGINAL_COMMAND:-}"
    set -- "${words[@]}"
  fi
  local verb=${1:-}
  shift || true
  case "$role:$verb" in
    database:put|database:sums|database:list|database:get|database:prune) ;;
    journal:journal-put|journal:tls-put|journal:tls-copies|journal:tls-get) ;;
    operator:*) ;;
    *) fail "the $role key may not run ${verb@Q}" ;;
  esac
  case "$verb" in
    put) [ $# -eq 2 ] || fail "usage: put NAME SHA256"; valid_file "$1"; valid_sum "$2"; store "$1" "$DIR" "$2" ;;
    sums) cat -- "$DIR"/*.sha256 2>/dev/null || true ;;
    list) list_dumps ;;
    get) [ $# -eq 1 ] || fail "usage: get NAME"; valid_file "$1"; cat -- "$DIR/$1" ;;
    verify) [ $# -eq 1 ] || fail "usage: verify NAME"; verify "$1" ;;
    prune) prune_dumps "$KEEP" "$DIR" ;;
    journal-put|tls-put) [ $# -eq 1 ] || fail "usage: $verb SHA256"; copy_put "${verb%-put}" "$1" ;;
    journals) copy_list journal ;;
    tls-copies) copy_list tls ;;
    journal-get|tls-get) [ $# -eq 1 ] || fail "usage: $verb NAME"; copy_get "${verb%-get}" "$1" ;;
    *) fail "unknown verb ${verb@Q}" ;;
  esac
}"""

# One SSH connection for the whole run (a master opened on first use, its stdio detached so no
# caller waits on it), closed on exit with the temporary files the run registered.
REMOTE = r"""CTL=$(mktemp -d)
TMPFILES=()
on_exit() {
  [ -S "$CTL/m" ] && ssh -F /dev/null -o ControlPath="$CTL/m" -O exit "${DEST[@]}" >/dev/null 2>&1
  rm -rf -- "$CTL" "${TMPFILES[@]}"
}
trap on_exit EXIT
ssh_opts() {
  printf '%s\n' -F /dev/null -i "$KEY" -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes \
    -o UserKnownHostsFile="$KNOWN" -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes \
    -o ConnectTimeout=10 -o ServerAliveInterval=15 -o ControlPath="$CTL/m"
}
remote() {
  local -a opts
  mapfile -t opts < <(ssh_opts)
  [ -S "$CTL/m" ] || ssh "${opts[@]}" -o ControlMaster=yes -f -N "${DEST[@]}" </dev/null >/dev/null 2>&1 || true
  ssh "${opts[@]}" -o ControlMaster=no "${DEST[@]}" -- "$@"
}
fail() { echo "bluegreen-offsite: $*" >&2; exit 2; }"""

JOURNAL_BODY = r"""
push_copy() {  # kind file: a copy of the file off-host (the backup host keeps it only if it changed)
  local kind=$1 file=$2 tmp sum
  [ -f "$file" ] || { echo "no $kind at $file yet"; return 0; }
  tmp=$(mktemp)
  TMPFILES+=("$tmp")
  cp -- "$file" "$tmp"
  sum=$(sha256sum -- "$tmp" | cut -d' ' -f1)
  remote "$kind-put" "$sum" < "$tmp"
}

# The newest copy of the certificate bundle put back (a rebuilt HAProxy host), checked against the
# checksum recorded on the backup host.
tls_restore() {
  local line name want tmp
  [ -n "$TLS" ] || fail "the stack names no haproxy.tlsCert"
  line=$(remote tls-copies | tail -n 1)
  [ -n "$line" ] || fail "the backup host holds no copy of the certificate bundle"
  IFS=$'\t' read -r name _ want <<< "$line"
  tmp=$(mktemp)
  TMPFILES+=("$tmp")
  remote tls-get "$name" > "$tmp"
  if [ "$(sha256sum -- "$tmp" | cut -d' ' -f1)" != "$want" ]; then
    echo "bluegreen-offsite: checksum mismatch on $name" >&2
    exit @MISMATCH@
  fi
  install -d -m 0755 -- "$(dirname -- "$TLS")"
  install -m 0600 -- "$tmp" "$TLS"
  echo "restored $name $want"
}

main() {
  case "${1:-}" in
    journal) push_copy journal "$JOURNAL"; if [ -n "$TLS" ]; then push_copy tls "$TLS"; fi ;;
    tls-restore) tls_restore ;;
    *) fail "usage: bluegreen-offsite journal | tls-restore" ;;
  esac
}"""

DATABASE_BODY = r"""
# The sha256 a verified dump's sidecar recorded (taken right after verification), else computed.
sum_of_dump() {
  local s
  s=$(grep -Eo '"sha256"[[:space:]]*:[[:space:]]*"[0-9a-f]{64}"' "$1.json" 2>/dev/null \
      | grep -Eo '[0-9a-f]{64}' || true)
  [ -n "$s" ] || s=$(sha256sum -- "$1" | cut -d' ' -f1)
  echo "$s"
}
verified() { [ -f "$1.json" ] && grep -Eq '"verified"[[:space:]]*:[[:space:]]*true' "$1.json"; }

# Every verified dump and its sidecar not yet on the backup host (by checksum) goes there; then the
# backup host applies its retention. Prints copied|present|failed|pruned NAME lines.
sync_all() {
  local sums f sum side rc=0
  sums=$(remote sums) || { echo "failed - the backup host did not answer" ; exit @UNREACHABLE@; }
  cd -- "$BACKUPS"
  while IFS= read -r f; do
    [ -n "$f" ] && verified "$f" || continue
    sum=$(sum_of_dump "$f")
    if grep -qxF "$sum  $f" <<< "$sums"; then
      echo "present $f $sum"
    elif out=$(remote put "$f" "$sum" < "$f" 2>&1); then
      echo "copied $f $sum"
    else
      echo "failed $f ${out//$'\n'/ }"; rc=1; continue
    fi
    side=$(sha256sum -- "$f.json" | cut -d' ' -f1)
    if ! grep -qxF "$side  $f.json" <<< "$sums"; then
      out=$(remote put "$f.json" "$side" < "$f.json" 2>&1) || { echo "failed $f.json ${out//$'\n'/ }"; rc=1; }
    fi
  done < <(ls -1 | grep -E '@DUMP@' | sort)
  remote prune || rc=1
  return $rc
}

bad_dump() {  # partial-file reason
  rm -f -- "$1"
  echo "bluegreen-offsite: the scheduled dump failed verification and was removed: $2" >&2
  exit 1
}

# A verified dump now (the timer, or `bluegreen db backup`): pg_dump, verify it like the deploys do
# (non-empty, `pg_restore --list` lists every table with its data, a full read gets through), its
# sidecar, local retention, then the copy off-host.
take_dump() {
  local stamp name target part size toc tables line qual kind schema rel sum applied tables_json
  install -d -o postgres -g postgres -m 0700 "$BACKUPS"
  stamp=$(date -u +%Y%m%d%H%M%S)
  name="$stamp-scheduled.dump"; target="$BACKUPS/$name"; part="$target.partial"
  pg_dump_to "$part" || { rm -f -- "$part"; fail "pg_dump failed"; }
  size=$(stat -c %s -- "$part")
  [ "$size" -gt 0 ] || bad_dump "$part" "the dump file is empty"
  toc=$(pg_restore --list "$part" 2>&1) || bad_dump "$part" "pg_restore --list cannot read it"
  pg_restore --file=/dev/null "$part" >/dev/null 2>&1 || bad_dump "$part" "reading every data block failed"
  tables=$(psql_q -F $'\x1f' -c "$TABLES_SQL")
  while IFS=$'\x1f' read -r qual kind; do
    [ -n "$qual" ] || continue
    schema=${qual%%.*}; rel=${qual#*.}
    grep -qF " TABLE $schema $rel " <<< "$toc" || bad_dump "$part" "it does not list table $qual"
    if [ "$kind" = r ]; then
      grep -qF " TABLE DATA $schema $rel " <<< "$toc" || bad_dump "$part" "it has no data for $qual"
    fi
  done <<< "$tables"
  sum=$(sha256sum -- "$part" | cut -d' ' -f1)
  applied='[]'
  if [ "$(psql_q -c "SELECT to_regclass('public._prisma_migrations') IS NOT NULL")" = t ]; then
    applied=$(psql_q -c "SELECT coalesce(json_agg(migration_name ORDER BY migration_name), '[]'::json)
      FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL")
  fi
  tables_json=$(cut -d$'\x1f' -f1 <<< "$tables" | { grep -v '^$' || true; } \
    | sed 's/\\/\\\\/g; s/"/\\"/g; s/.*/"&"/' | paste -sd, -)
  psql_q -v file="$name" -v bytes="$size" -v sha="$sum" -v by="${BLUEGREEN_BY:-bluegreen-offsite dump}" \
    -v applied="$applied" -v tables="[${tables_json}]" > "$target.json.part" <<'SQL'
SELECT json_build_object('file', :'file', 'bytes', (:'bytes')::bigint,
  'createdAt', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'kind', 'scheduled',
  'database', current_database(), 'verified', true, 'tables', (:'tables')::json,
  'applied', (:'applied')::json, 'pending', '[]'::json, 'colour', NULL, 'ref', NULL, 'sha', NULL,
  'release', NULL, 'by', :'by', 'migrated', false, 'migratedAt', NULL, 'note', NULL, 'sha256', :'sha');
SQL
  mv -f -- "$target.json.part" "$target.json"
  chown postgres:postgres -- "$part"
  mv -f -- "$part" "$target"
  echo "dumped $name $size $sum"
  prune_dumps "$LOCAL_KEEP" "$BACKUPS"
}

# A copy back from the backup host (a rebuilt database host), checked against the checksum the
# backup host recorded when it arrived.
pull() {  # name
  local name=$1 sums want side got
  [[ $name =~ @DUMP@ ]] || fail "refusing file name ${name@Q}"
  sums=$(remote sums) || { echo "bluegreen-offsite: the backup host did not answer" >&2; exit @UNREACHABLE@; }
  want=$(awk -v n="$name" '$2 == n {print $1}' <<< "$sums")
  side=$(awk -v n="$name.json" '$2 == n {print $1}' <<< "$sums")
  [ -n "$want" ] || fail "$name is not on the backup host (or has no checksum there)"
  install -d -o postgres -g postgres -m 0700 "$BACKUPS"
  TMPFILES+=("$BACKUPS/.$name.pull" "$BACKUPS/.$name.json.pull")
  remote get "$name" > "$BACKUPS/.$name.pull"
  got=$(sha256sum -- "$BACKUPS/.$name.pull" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    echo "bluegreen-offsite: checksum mismatch pulling $name: recorded $want, received $got" >&2
    exit @MISMATCH@
  fi
  if [ -n "$side" ]; then
    remote get "$name.json" > "$BACKUPS/.$name.json.pull"
    [ "$(sha256sum -- "$BACKUPS/.$name.json.pull" | cut -d' ' -f1)" = "$side" ] \
      || { echo "bluegreen-offsite: checksum mismatch pulling $name.json" >&2; exit @MISMATCH@; }
    mv -f -- "$BACKUPS/.$name.json.pull" "$BACKUPS/$name.json"
  fi
  chown postgres:postgres -- "$BACKUPS/.$name.pull"
  mv -f -- "$BACKUPS/.$name.pull" "$BACKUPS/$name"
  echo "pulled $name $got"
}

main() {
  install -d -o postgres -g postgres -m 0700 "$BACKUPS"
  exec 9>"$BACKUPS/.offsite.lock"
  flock -w 900 9 || fail "another off-host copy holds $BACKUPS/.offsite.lock"
  case "${1:-}" in
    sync) sync_all ;;
    dump) take_dump; sync_all ;;
    pull) [ $# -eq 2 ] || fail "usage: bluegreen-offsite pull NAME"; pull "$2" ;;
    *) fail "usage: bluegreen-offsite sync | dump | pull NAME" ;;
  esac
}"""
