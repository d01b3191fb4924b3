'use strict';
// Stand-in for `next build`: checks the sources, then writes `build/` (BUILD_ID, the rendered page,
// a manifest) into a temporary directory and swaps it in, so a failed build never leaves a half
// written output that the server would start from.
//
// Fails with exit 1 when a file `BUILD_SHOULD_FAIL` exists (tests publish such a variant) or when
// any JavaScript file does not parse, as a broken page would fail `next build`.

const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const buildDir = path.join(root, 'build');

function fail(message) {
  console.error(`Build failed: ${message}`);
  process.exit(1);
}

function javascriptSources() {
  const files = [path.join(root, 'server.js')];
  for (const dir of ['lib', 'scripts']) {
    const full = path.join(root, dir);
    if (fs.existsSync(full)) {
      for (const name of fs.readdirSync(full).sort()) {
        if (name.endsWith('.js')) {
          files.push(path.join(full, name));
        }
      }
    }
  }
  return files;
}

function checkSyntax(file) {
  try {
    execFileSync(process.execPath, ['--check', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const detail = err.stderr ? err.stderr.toString().trim() : err.message;
    fail(`${path.relative(root, file)} does not parse:\n${detail}`);
  }
}

function checkMigrations() {
  const dir = path.join(root, 'prisma', 'migrations');
  if (!fs.existsSync(dir)) {
    return 0;
  }
  const names = fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name);
  for (const name of names) {
    if (!fs.existsSync(path.join(dir, name, 'migration.sql'))) {
      fail(`prisma/migrations/${name} has no migration.sql`);
    }
  }
  return names.length;
}

function main() {
  console.log('Creating an optimized production build ...');
  if (fs.existsSync(path.join(root, 'BUILD_SHOULD_FAIL'))) {
    fail('BUILD_SHOULD_FAIL is present in the source tree (a deliberately broken build).');
  }
  const sources = javascriptSources();
  sources.forEach(checkSyntax);
  const migrations = checkMigrations();

  const version = fs.readFileSync(path.join(root, 'VERSION'), 'utf8').trim();
  if (!version) {
    fail('VERSION is empty.');
  }
  const buildId = crypto.randomBytes(12).toString('base64url');
  const template = fs.readFileSync(path.join(root, 'src', 'index.html'), 'utf8');
  // Colour and commit are only known at run time; the server fills them in.
  const page = template.replace(/\{\{version\}\}/g, version).replace(/\{\{buildId\}\}/g, buildId);

  const staging = fs.mkdtempSync(path.join(root, '.build-'));
  try {
    fs.writeFileSync(path.join(staging, 'BUILD_ID'), `${buildId}\n`);
    fs.writeFileSync(path.join(staging, 'index.html'), page);
    const manifest = { buildId, version, builtAt: new Date().toISOString(), sources: sources.length, migrations };
    fs.writeFileSync(path.join(staging, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    fs.rmSync(buildDir, { recursive: true, force: true });
    fs.renameSync(staging, buildDir);
  } catch (err) {
    fs.rmSync(staging, { recursive: true, force: true });
    fail(err.message);
  }
  console.log(`Build ${buildId} of version ${version} written to build/ (${sources.length} sources checked).`);
}

main();
