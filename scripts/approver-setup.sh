#!/usr/bin/env bash
# Make the approver account and the shared approvals directory of one stack (run as root, once).
#
#   scripts/approver-setup.sh APPROVER USER STACK [DIR] [BLUEGREEN]
#
# APPROVER   the account that gives terminal approvals (created if missing: a system account
#            with no login shell and no password of its own)
# USER       the account the MCP server runs as (the person's own account)
# STACK      the stack name (e.g. prod)
# DIR        the approvals directory (default /var/lib/bluegreen/approvals; the server and
#            `bluegreen approve` read $BLUEGREEN_APPROVALS_DIR or --approvals-dir when it differs)
# BLUEGREEN  the `bluegreen` the approver runs: it (and the Python package it loads) must not be
#            writable by USER, or anything running as USER could change what the approver does
#            (e.g. the console script of a venv root installed and owns; default: no sudoers rule)
#
# Layout (docs/MCP.md): DIR/STACK root-owned 0755; requests/ USER:APPROVER 2750 (the server writes
# requests the approver reads); grants/ APPROVER:USER 2750 (the approver writes grants the server
# reads). With BLUEGREEN, /etc/sudoers.d/bluegreen-approve-USER lets USER run exactly
# `sudo -u APPROVER BLUEGREEN approve ...`, asking USER's own password every time.
set -euo pipefail

if [ "$#" -lt 3 ] || [ "$#" -gt 5 ]; then
  sed -n '2,19p' "$0" >&2
  exit 2
fi
approver=$1 user=$2 stack=$3 dir=${4:-/var/lib/bluegreen/approvals} bluegreen=${5:-}

[ "$(id -u)" -eq 0 ] || { echo "approver-setup: run as root" >&2; exit 2; }
[[ "$stack" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$ ]] || { echo "approver-setup: bad stack name $stack" >&2; exit 2; }
[[ "$dir" = /* ]] || { echo "approver-setup: DIR must be absolute" >&2; exit 2; }
id -u "$user" >/dev/null 2>&1 || { echo "approver-setup: no account $user" >&2; exit 2; }
[ "$approver" != "$user" ] || { echo "approver-setup: the approver must be another account" >&2; exit 2; }

if ! id -u "$approver" >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$approver"
  echo "approver-setup: created account $approver"
fi
user_group=$(id -gn "$user")
approver_group=$(id -gn "$approver")

install -d -o root -g root -m 0755 "$dir" "$dir/$stack"
install -d -o "$user" -g "$approver_group" -m 2750 "$dir/$stack/requests"
install -d -o "$approver" -g "$user_group" -m 2750 "$dir/$stack/grants"
# install -d leaves an existing directory's owner and mode alone: set them.
chown "$user:$approver_group" "$dir/$stack/requests" && chmod 2750 "$dir/$stack/requests"
chown "$approver:$user_group" "$dir/$stack/grants" && chmod 2750 "$dir/$stack/grants"
echo "approver-setup: $dir/$stack/{requests,grants} ready"

if [ -n "$bluegreen" ]; then
  [[ "$bluegreen" = /* ]] || { echo "approver-setup: BLUEGREEN must be an absolute path" >&2; exit 2; }
  # The program and every directory above it must be root's and closed to others' writes (a
  # sticky directory such as /var/tmp is fine: nobody else can rename root's entries in it).
  path=$bluegreen
  while [ "$path" != "/" ]; do
    mode=0$(stat -Lc '%a' "$path")
    if [ "$(stat -Lc '%u' "$path")" != 0 ] || { [ $(( mode & 022 )) -ne 0 ] && [ $(( mode & 01000 )) -eq 0 ]; }; then
      echo "approver-setup: $path is not root's alone: $user could change what the approver runs" >&2
      exit 2
    fi
    path=$(dirname "$path")
  done
  rule="/etc/sudoers.d/bluegreen-approve-$user"
  tmp=$(mktemp)
  # Defaults>APPROVER: sudo asks the password every time it runs as the approver (no cached
  # credentials another program on the same terminal could reuse).
  printf 'Defaults>%s timestamp_timeout=0\n%s ALL=(%s) %s approve *\n' "$approver" "$user" "$approver" "$bluegreen" > "$tmp"
  visudo -cf "$tmp" >/dev/null
  install -o root -g root -m 0440 "$tmp" "$rule"
  rm -f "$tmp"
  echo "approver-setup: $rule: $user may run '$bluegreen approve ...' as $approver, with their password"
  # The MCP server names this program (by its absolute path) in the command it shows the person.
  printf '%s\n' "$bluegreen" > "$dir/$stack/approve-with.tmp"
  chown root:root "$dir/$stack/approve-with.tmp" && chmod 0644 "$dir/$stack/approve-with.tmp"
  mv "$dir/$stack/approve-with.tmp" "$dir/$stack/approve-with"
fi
