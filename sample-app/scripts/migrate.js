'use strict';
// Stand-in for the Prisma migrate CLI (whose engines cannot be downloaded offline), with Prisma's
// table and semantics so the deploy tooling sees what it would see in production:
//
//   node scripts/migrate.js deploy                    apply pending migrations (`prisma migrate deploy`)
//   node scripts/migrate.js status                    list pending/failed migrations, exit 1 if any
//   node scripts/migrate.js resolve --rolled-back N   mark failed migration N as rolled back
//   node scripts/migrate.js resolve --applied N       record N as applied without running it
//
// - DATABASE_URL comes from the environment, else from `.env` in the current directory.
// - Migrations are `prisma/migrations/<name>/migration.sql` in the current directory, by name.
// - `_prisma_migrations` has Prisma's columns. Pending = no row of that name with rolled_back_at
//   NULL. A row with finished_at and rolled_back_at NULL is a failed (or killed) migration: every
//   later deploy stops with P3009 until it is resolved.
// - Each migration.sql goes to the server as one simple query, so a multi-statement file is one
//   implicit transaction. The row is inserted before the file runs (a killed run leaves it failed);
//   on error its logs are filled in and finished_at stays NULL (P3018).
// - Deploys serialise on pg_advisory_lock(72707369), waiting at most MIGRATE_LOCK_TIMEOUT_MS
//   (10000, as Prisma) before P1002.
// - Exit code 0 on success (also when nothing is pending), 1 on any error; P-codes are in stderr.

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const { DatabaseUrlError, connect, parseDatabaseUrl } = require('../lib/db');
const { loadEnvFile } = require('../lib/env');

const ADVISORY_LOCK_ID = 72707369;
const RESOLVE_URL = 'https://pris.ly/d/migrate-resolve';
const projectDir = process.cwd();
const migrationsRel = path.join('prisma', 'migrations');
const migrationsDir = path.join(projectDir, migrationsRel);

class MigrateError extends Error {
  constructor(code, message) {
    super(code ? `Error: ${code}\n\n${message}` : `Error: ${message}`);
    this.code = code;
  }
}

const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)`;

function lockTimeoutMs() {
  const raw = process.env.MIGRATE_LOCK_TIMEOUT_MS;
  if (raw === undefined || raw === '') {
    return 10000;
  }
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    throw new MigrateError(null, `MIGRATE_LOCK_TIMEOUT_MS must be a positive integer, got ${JSON.stringify(raw)}.`);
  }
  return value;
}

function localMigrations() {
  if (!fs.existsSync(migrationsDir)) {
    return [];
  }
  return fs
    .readdirSync(migrationsDir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort()
    .map((name) => {
      const file = path.join(migrationsDir, name, 'migration.sql');
      if (!fs.existsSync(file)) {
        throw new MigrateError(
          'P3015',
          `Could not find the migration file at ${path.join(migrationsRel, name, 'migration.sql')}. ` +
            'Please delete the directory or restore the migration file.',
        );
      }
      const bytes = fs.readFileSync(file);
      return {
        name,
        sql: bytes.toString('utf8'),
        checksum: crypto.createHash('sha256').update(bytes).digest('hex'),
      };
    });
}

function connectionError(err, target) {
  const [hostPort] = target.split('/');
  const database = target.slice(hostPort.length + 1);
  if (err instanceof DatabaseUrlError) {
    return new MigrateError('P1012', err.message);
  }
  if (err.code === '28P01' || err.code === '28000') {
    return new MigrateError('P1000', `Authentication failed against database server at \`${hostPort}\`: ${err.message}`);
  }
  if (err.code === '3D000') {
    return new MigrateError('P1003', `Database \`${database}\` does not exist on the database server at \`${hostPort}\`.`);
  }
  return new MigrateError(
    'P1001',
    `Can't reach database server at \`${hostPort}\`\n\nPlease make sure your database server is running at \`${hostPort}\`. (${err.message})`,
  );
}

async function open() {
  const url = process.env.DATABASE_URL;
  let target = '(unknown)';
  try {
    target = parseDatabaseUrl(url).target;
    const { client } = await connect(url, { connectTimeoutMs: 5000 });
    return { client, target };
  } catch (err) {
    throw connectionError(err, target);
  }
}

async function tableExists(client) {
  const { rows } = await client.query("SELECT to_regclass('_prisma_migrations') IS NOT NULL AS present");
  return rows[0].present;
}

async function databaseRows(client) {
  if (!(await tableExists(client))) {
    return [];
  }
  const { rows } = await client.query(
    'SELECT id, migration_name, checksum, started_at, finished_at, rolled_back_at, logs ' +
      'FROM "_prisma_migrations" ORDER BY started_at, migration_name',
  );
  return rows;
}

function failedRows(rows) {
  return rows.filter((row) => row.finished_at === null && row.rolled_back_at === null);
}

function pendingMigrations(local, rows) {
  const applied = new Set(rows.filter((row) => row.rolled_back_at === null).map((row) => row.migration_name));
  return local.filter((migration) => !applied.has(migration.name));
}

function blockedByFailed(failed) {
  const lines = failed.map((row) => `The \`${row.migration_name}\` migration started at ${row.started_at.toISOString()} failed`);
  return new MigrateError(
    'P3009',
    'migrate found failed migrations in the target database, new migrations will not be applied. ' +
      `Read more about how to resolve migration issues in a production database: ${RESOLVE_URL}\n${lines.join('\n')}`,
  );
}

async function withAdvisoryLock(client, target, work) {
  const timeoutMs = lockTimeoutMs();
  // lock_timeout covers advisory locks too; reset right after so it never limits the migrations.
  await client.query(`SET lock_timeout = ${timeoutMs}`);
  try {
    await client.query(`SELECT pg_advisory_lock(${ADVISORY_LOCK_ID})`);
  } catch (err) {
    if (err.code === '55P03') {
      throw new MigrateError(
        'P1002',
        `The database server at \`${target.split('/')[0]}\` was reached but timed out.\n\n` +
          `Context: Timed out trying to acquire a postgres advisory lock (SELECT pg_advisory_lock(${ADVISORY_LOCK_ID})). ` +
          `Timeout: ${timeoutMs}ms. See https://pris.ly/d/migrate-advisory-locking for details.`,
      );
    }
    throw err;
  } finally {
    await client.query('RESET lock_timeout');
  }
  try {
    return await work();
  } finally {
    await client.query(`SELECT pg_advisory_unlock(${ADVISORY_LOCK_ID})`).catch(() => {});
  }
}

function appliedTree(names) {
  const lines = ['migrations/'];
  for (const name of names) {
    lines.push(`  └─ ${name}/`, '    └─ migration.sql');
  }
  return lines.join('\n');
}

async function applyOne(client, migration) {
  const id = crypto.randomUUID();
  // Recorded before the file runs: a process killed mid-migration leaves a failed row behind.
  await client.query(
    'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, applied_steps_count) ' +
      'VALUES ($1, $2, $3, now(), 0)',
    [id, migration.checksum, migration.name],
  );
  try {
    await client.query(migration.sql);
  } catch (err) {
    const code = err.code || 'unknown';
    const logs = `Database error code: ${code}\n\nDatabase error:\nERROR: ${err.message}\n`;
    await client.query('UPDATE "_prisma_migrations" SET logs = $2 WHERE id = $1', [id, logs]);
    throw new MigrateError(
      'P3018',
      'A migration failed to apply. New migrations cannot be applied before the error is recovered from. ' +
        `Read more about how to resolve migration issues in a production database: ${RESOLVE_URL}\n\n` +
        `Migration name: ${migration.name}\n\n${logs}`,
    );
  }
  await client.query(
    'UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = $1',
    [id],
  );
}

async function deploy(client, target) {
  const local = localMigrations();
  console.log(`${local.length} migration${local.length === 1 ? '' : 's'} found in ${migrationsRel}\n`);
  await withAdvisoryLock(client, target, async () => {
    await client.query(CREATE_TABLE);
    const rows = await databaseRows(client);
    const failed = failedRows(rows);
    if (failed.length > 0) {
      throw blockedByFailed(failed);
    }
    const pending = pendingMigrations(local, rows);
    if (pending.length === 0) {
      console.log('No pending migrations to apply.');
      return;
    }
    const applied = [];
    try {
      for (const migration of pending) {
        console.log(`Applying migration \`${migration.name}\``);
        await applyOne(client, migration);
        applied.push(migration.name);
      }
    } finally {
      if (applied.length > 0) {
        console.log(`\nThe following migration(s) have been applied:\n\n${appliedTree(applied)}\n`);
      }
    }
    console.log('All migrations have been successfully applied.');
  });
}

async function status(client) {
  const local = localMigrations();
  const rows = await databaseRows(client);
  const failed = failedRows(rows);
  const pending = pendingMigrations(local, rows);
  console.log(`${local.length} migration${local.length === 1 ? '' : 's'} found in ${migrationsRel}`);
  if (failed.length > 0) {
    console.log(`\nFollowing migration${failed.length === 1 ? '' : 's'} ${failed.length === 1 ? 'has' : 'have'} failed:`);
    failed.forEach((row) => console.log(row.migration_name));
  }
  if (pending.length > 0) {
    console.log(`\nFollowing migration${pending.length === 1 ? '' : 's'} ${pending.length === 1 ? 'has' : 'have'} not yet been applied:`);
    pending.forEach((migration) => console.log(migration.name));
  }
  if (failed.length === 0 && pending.length === 0) {
    console.log('\nDatabase schema is up to date!');
    return 0;
  }
  return 1;
}

async function resolve(client, target, flag, name) {
  if ((flag !== '--rolled-back' && flag !== '--applied') || !name) {
    throw new MigrateError(null, 'usage: migrate.js resolve --rolled-back <name> | --applied <name>');
  }
  await withAdvisoryLock(client, target, async () => {
    await client.query(CREATE_TABLE);
    const rows = await databaseRows(client);
    const failed = failedRows(rows).filter((row) => row.migration_name === name);
    if (flag === '--rolled-back') {
      if (failed.length === 0) {
        throw new MigrateError('P3012', `Migration \`${name}\` cannot be rolled back because it is not in a failed state.`);
      }
      await client.query(
        'UPDATE "_prisma_migrations" SET rolled_back_at = now() WHERE migration_name = $1 ' +
          'AND finished_at IS NULL AND rolled_back_at IS NULL',
        [name],
      );
      console.log(`Migration ${name} marked as rolled back.`);
      return;
    }
    const migration = localMigrations().find((candidate) => candidate.name === name);
    if (!migration) {
      throw new MigrateError('P3017', `The migration ${name} could not be found. Please make sure that the migration exists.`);
    }
    if (rows.some((row) => row.migration_name === name && row.finished_at !== null && row.rolled_back_at === null)) {
      throw new MigrateError('P3008', `The migration \`${name}\` is already recorded as applied in the database.`);
    }
    await client.query('BEGIN');
    try {
      await client.query(
        'UPDATE "_prisma_migrations" SET rolled_back_at = now() WHERE migration_name = $1 ' +
          'AND finished_at IS NULL AND rolled_back_at IS NULL',
        [name],
      );
      await client.query(
        'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, finished_at, applied_steps_count) ' +
          'VALUES ($1, $2, $3, now(), now(), 0)',
        [crypto.randomUUID(), migration.checksum, name],
      );
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    }
    console.log(`Migration ${name} marked as applied.`);
  });
}

const USAGE = 'usage: node scripts/migrate.js deploy | status | resolve --rolled-back <name> | resolve --applied <name>';

async function main(argv) {
  const [command, ...rest] = argv;
  if (!['deploy', 'status', 'resolve'].includes(command)) {
    throw new MigrateError(null, USAGE);
  }
  loadEnvFile(path.join(projectDir, '.env'));
  const { client, target } = await open();
  try {
    console.log(`Datasource "db": PostgreSQL database at "${target}"\n`);
    if (command === 'deploy') {
      await deploy(client, target);
      return 0;
    }
    if (command === 'status') {
      return await status(client);
    }
    await resolve(client, target, rest[0], rest[1]);
    return 0;
  } finally {
    await client.end().catch(() => {});
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(err instanceof MigrateError ? err.message : `Error: ${err.message}`);
    process.exitCode = 1;
  },
);
