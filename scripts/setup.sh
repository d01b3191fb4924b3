#!/usr/bin/env bash
# Install everything the lab and the tests need, skipping what is already there (safe to re-run).
#
#   bash scripts/setup.sh            install what is missing (Debian packages need root)
#   bash scripts/setup.sh --check    only say what is missing; exit 1 if anything is
#
# Debian packages: make and python3-venv (a bare Debian 12 has neither), curl and ca-certificates,
# haproxy, openssh-server, socat, PostgreSQL 15, Node.js and npm, git, jq, sudo (the approval
# tests), iproute2 (the test worlds), prometheus (with promtool), prometheus-node-exporter and
# prometheus-blackbox-exporter (the lab's monitoring); PM2 from npm; the Python venv with the
# project and its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
check_only=false
[ "${1:-}" = "--check" ] && check_only=true

need=()
for pair in make:make python3:python3 curl:curl haproxy:haproxy sshd:openssh-server socat:socat git:git \
            node:nodejs npm:npm ssh-keygen:openssh-client jq:jq flock:util-linux ip:iproute2 sudo:sudo \
            prometheus:prometheus promtool:prometheus prometheus-node-exporter:prometheus-node-exporter \
            prometheus-blackbox-exporter:prometheus-blackbox-exporter; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
# `python3 -m venv` needs ensurepip, which Debian ships apart from python3 (python3-venv).
if command -v python3 >/dev/null 2>&1 && ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
  need+=(python3-venv)
fi
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)  # npm and pip over HTTPS
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15 postgresql-client-15)
mapfile -t need < <(printf '%s\n' ${need[@]+"${need[@]}"} | awk 'NF && !seen[$0]++')
if [ ${#need[@]} -gt 0 ]; then
  if $check_only || [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${need[*]}" >&2
    echo "setup: install them as root: apt-get install --no-install-recommends ${need[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if $check_only; then
  echo "setup: every Debian package is there" >&2
  exit 0
fi

if ! command -v pm2 >/dev/null 2>&1; then
  echo "setup: installing pm2 7 from npm" >&2
  npm install -g --no-audit --no-fund pm2@7.0.4 >/dev/null
fi

# The real sample app (Next.js 15 + Prisma 6): installing it warms npm's cache, from which the lab's
# hosts install offline (`npm ci --prefer-offline`); the real-Prisma tests use this node_modules.
if [ ! -f sample-next/node_modules/.package-lock.json ] \
   || [ sample-next/package-lock.json -nt sample-next/node_modules/.package-lock.json ]; then
  echo "setup: npm ci in sample-next (Next.js 15 + Prisma; warms npm's cache for the lab)" >&2
  (cd sample-next && npm ci --no-audit --no-fund >/dev/null)
fi

# The light sample app's dependencies (pg) go into the same cache: the lab's hosts, and the test
# worlds that have no network at all, install both apps from it.
npm_cache=$(npm config get cache)
if [ ! -f "$npm_cache/.jw-sample-app" ] || [ sample-app/package-lock.json -nt "$npm_cache/.jw-sample-app" ]; then
  echo "setup: warming npm's cache with sample-app's dependencies" >&2
  warm=$(mktemp -d)
  cp sample-app/package.json sample-app/package-lock.json "$warm/"
  (cd "$warm" && npm ci --no-audit --no-fund --ignore-scripts >/dev/null)
  rm -rf "$warm"
  touch "$npm_cache/.jw-sample-app"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import bluegreen, fakepve, pytest, pulumi_proxmoxve, mcp, rich, ruamel.yaml, prometheus_client" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: installing the project into .venv" >&2
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".[test]"
  touch .venv/.installed
fi
echo "setup: ready" >&2
