#!/usr/bin/env bash
# Install everything the lab and the tests need, skipping what is already there (safe to re-run).
# Debian packages: haproxy, openssh-server, socat, PostgreSQL 15, Node.js, git; PM2 from npm;
# the Python venv with the project and its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in haproxy:haproxy sshd:openssh-server socat:socat git:git node:nodejs npm:npm ssh-keygen:openssh-client jq:jq flock:util-linux; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15 postgresql-client-15)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v pm2 >/dev/null 2>&1; then
  echo "setup: installing pm2 7 from npm" >&2
  npm install -g --no-audit --no-fund pm2@7.0.4 >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import bluegreen, fakepve, pytest, pulumi_proxmoxve, mcp" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: installing the project into .venv" >&2
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".[test]"
  touch .venv/.installed
fi
echo "setup: ready" >&2
