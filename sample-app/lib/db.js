'use strict';
// DATABASE_URL handling shared by the server's readiness check and the migrate script.
// Prisma URLs may carry `?schema=name`; node-postgres does not know it, so it becomes search_path.

const { Client } = require('pg');

class DatabaseUrlError extends Error {}

function parseDatabaseUrl(raw) {
  if (!raw) {
    throw new DatabaseUrlError('Environment variable not found: DATABASE_URL.');
  }
  let url;
  try {
    url = new URL(raw);
  } catch {
    throw new DatabaseUrlError('DATABASE_URL is not a valid URL.');
  }
  if (url.protocol !== 'postgresql:' && url.protocol !== 'postgres:') {
    throw new DatabaseUrlError(
      `DATABASE_URL must start with postgresql:// or postgres:// (got ${url.protocol}//).`,
    );
  }
  const schema = url.searchParams.get('schema') || null;
  url.searchParams.delete('schema');
  const port = url.port || '5432';
  const database = decodeURIComponent(url.pathname.replace(/^\//, '')) || '(default)';
  // Never includes the password: this string goes into logs and error messages.
  const target = `${url.hostname}:${port}/${database}`;
  return { connectionString: url.toString(), schema, target };
}

function quoteIdent(name) {
  return `"${name.replace(/"/g, '""')}"`;
}

async function connect(raw, { connectTimeoutMs = 5000, queryTimeoutMs } = {}) {
  const parsed = parseDatabaseUrl(raw);
  const client = new Client({
    connectionString: parsed.connectionString,
    connectionTimeoutMillis: connectTimeoutMs,
    query_timeout: queryTimeoutMs,
  });
  // An idle connection that the server drops must not crash the process.
  client.on('error', () => {});
  try {
    await client.connect();
    if (parsed.schema) {
      await client.query(`SET search_path TO ${quoteIdent(parsed.schema)}`);
    }
  } catch (err) {
    await client.end().catch(() => {});
    throw err;
  }
  return { client, target: parsed.target };
}

module.exports = { DatabaseUrlError, parseDatabaseUrl, quoteIdent, connect };
