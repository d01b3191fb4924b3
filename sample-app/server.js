'use strict';
// Stand-in for `next start` of the JW Attendant Scheduler, with the behaviour the deploy relies on:
// listens on HOSTNAME:PORT (PM2 cluster mode works: workers share the listener), refuses to start
// without a build, answers /api/health without the database and /api/ready with a `SELECT 1`,
// and drains on SIGINT/SIGTERM. Unlike Next it tells PM2 when it listens (`wait_ready`).
//
// Environment: PORT (3000), HOSTNAME (127.0.0.1), BLUEGREEN_COLOR, DATABASE_URL (or `.env` in the
// release), DRAIN_MS (how long to keep answering with `Connection: close` before closing, 1000),
// KEEP_ALIVE_TIMEOUT (ms, as Next), APP_SHARED_DIR (see lib/paths.js).
// Test switch: a file `<shared>/fault` containing `5xx` makes every request answer 500.

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const { connect } = require('./lib/db');
const { loadEnvFile } = require('./lib/env');
const { releaseRoot, resolveSharedDir } = require('./lib/paths');

const releaseDir = releaseRoot();
loadEnvFile(path.join(releaseDir, '.env'));

function readOptional(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (err.code === 'ENOENT') {
      return null;
    }
    throw err;
  }
}

function readTrimmed(file) {
  return (readOptional(file) || '').trim() || null;
}

function positiveInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') {
    return fallback;
  }
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) {
    console.error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
    process.exit(1);
  }
  return value;
}

const buildDir = path.join(releaseDir, 'build');
const buildId = readTrimmed(path.join(buildDir, 'BUILD_ID'));
const pageTemplate = readOptional(path.join(buildDir, 'index.html'));
if (!buildId || !pageTemplate) {
  console.error(
    `Could not find a production build in '${buildDir}'. Run "npm run build" before starting the server.`,
  );
  process.exit(1);
}

const identity = Object.freeze({
  version: readTrimmed(path.join(releaseDir, 'VERSION')) || 'unknown',
  commit: readTrimmed(path.join(releaseDir, 'REVISION')),
  buildId,
  color: process.env.BLUEGREEN_COLOR || 'unknown',
});

const port = positiveInt('PORT', 3000);
const host = process.env.HOSTNAME || '127.0.0.1';
const drainMs = positiveInt('DRAIN_MS', 1000);
const keepAliveTimeout = positiveInt('KEEP_ALIVE_TIMEOUT', 0);
const sharedDir = resolveSharedDir(releaseDir);
const faultFile = sharedDir ? path.join(sharedDir, 'fault') : null;
const slowLimitMs = 60000;

// Read on every request so a test can flip it without restarting anything.
function faultInjected() {
  if (!faultFile) {
    return false;
  }
  try {
    return (readTrimmed(faultFile) || '').includes('5xx');
  } catch (err) {
    console.error(`cannot read the fault switch ${faultFile}: ${err.message}`);
    return false;
  }
}

let draining = false;

function send(res, status, body, contentType = 'application/json; charset=utf-8') {
  const payload = typeof body === 'string' ? body : JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('Content-Type', contentType);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', Buffer.byteLength(payload));
  if (draining) {
    res.setHeader('Connection', 'close');
  }
  res.end(payload);
}

// Signed out, NextAuth's middleware sends every page to its sign-in page with a 307; the sign-in
// page itself answers 200. The estate's app does this (NEXTAUTH_URL is set in its .env).
function redirect(res, location) {
  res.setHeader('Location', location);
  send(res, 307, `Redirecting to ${location}\n`, 'text/plain; charset=utf-8');
}

const signInPage =
  '<!doctype html><html><head><title>Sign in - JW Attendant Scheduler</title></head>' +
  '<body><form method="post" action="/api/auth/signin/email"><label>Email <input name="email"></label>' +
  '<button>Sign in with Email</button></form></body></html>\n';

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function renderPage() {
  const values = { ...identity, commit: identity.commit || 'unknown' };
  return pageTemplate.replace(/\{\{(\w+)\}\}/g, (whole, key) =>
    key in values ? escapeHtml(values[key]) : whole,
  );
}

async function ready(res) {
  let client;
  try {
    ({ client } = await connect(process.env.DATABASE_URL, { connectTimeoutMs: 2000, queryTimeoutMs: 2000 }));
    await client.query('SELECT 1');
    send(res, 200, { status: 'ready', database: 'ok', ...identity });
  } catch (err) {
    // pg's messages name host, user and database, never the password.
    console.error(`readiness check failed: ${err.message}`);
    send(res, 503, { status: 'unavailable', database: 'error', error: err.message, ...identity });
  } finally {
    if (client) {
      await client.end().catch(() => {});
    }
  }
}

// Headers go out at once and the body after `ms`: a caller knows the request is in flight as soon
// as it has the status line, which is what drain tests need.
function slow(res, url) {
  const ms = Math.min(Math.max(Number(url.searchParams.get('ms')) || 0, 0), slowLimitMs);
  const body = `done after ${ms} ms\n`;
  res.statusCode = 200;
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  if (draining) {
    res.setHeader('Connection', 'close');
  }
  res.flushHeaders();
  setTimeout(() => res.end(body), ms);
}

function handle(req, res) {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    send(res, 405, { status: 'error', error: 'method not allowed' });
    return;
  }
  if (faultInjected()) {
    send(res, 500, { status: 'error', error: 'fault injected', color: identity.color });
    return;
  }
  const url = new URL(req.url, 'http://localhost');
  switch (url.pathname) {
    case '/api/health':
      if (process.env.NO_HEALTH_ROUTE === '1') {
        // The estate's app as it runs today: no health route yet (the legacy lab sets this).
        send(res, 404, { status: 'error', error: `no route for ${url.pathname}` });
        return;
      }
      send(res, 200, { status: 'ok', ...identity, pid: process.pid });
      return;
    case '/api/ready':
      ready(res);
      return;
    case '/api/slow':
      slow(res, url);
      return;
    case '/':
      if (process.env.NEXTAUTH_URL) {
        redirect(res, '/api/auth/signin?callbackUrl=%2F');
        return;
      }
      send(res, 200, renderPage(), 'text/html; charset=utf-8');
      return;
    case '/api/auth/signin':
      send(res, 200, signInPage, 'text/html; charset=utf-8');
      return;
    default:
      send(res, 404, { status: 'error', error: `no route for ${url.pathname}` });
  }
}

const server = http.createServer(handle);
if (keepAliveTimeout > 0) {
  server.keepAliveTimeout = keepAliveTimeout;
}

// Answer with `Connection: close` for a moment so keep-alive clients (HAProxy, PM2's cluster
// balancer) move to a fresh connection, then stop accepting and exit once in-flight requests end.
// No timeout of its own: PM2's kill_timeout caps the wait, as it does for `next start`.
function shutdown(reason) {
  if (draining) {
    return;
  }
  draining = true;
  console.log(`${reason}: draining for ${drainMs} ms`);
  setTimeout(() => {
    server.close(() => {
      console.log('all connections closed, exiting');
      process.exit(0);
    });
    // Connections that finish a request after close() would otherwise idle until keep-alive ends.
    setInterval(() => server.closeIdleConnections(), 100).unref();
  }, drainMs);
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('message', (message) => {
  if (message === 'shutdown') {
    shutdown('shutdown message');
  }
});

server.on('error', (err) => {
  console.error(`cannot listen on ${host}:${port}: ${err.message}`);
  process.exit(1);
});

server.listen(port, host, () => {
  console.log(
    `listening on ${host}:${port}: version ${identity.version}, colour ${identity.color}, ` +
      `build ${identity.buildId}, fault switch ${faultFile || 'off (no shared dir)'}`,
  );
  if (process.send) {
    process.send('ready');
  }
});
