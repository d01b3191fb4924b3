// `npm run build`: `prisma generate`, then `next build --turbopack`, each timed. The timings go to stdout and to
// .next/bluegreen-build.json (the benchmarks read them). No network: telemetry and Prisma's update
// check are off, fonts are local, and the generated client needs no engine download.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const env = {
  ...process.env,
  NEXT_TELEMETRY_DISABLED: "1",
  CHECKPOINT_DISABLE: "1",
  PRISMA_HIDE_UPDATE_MESSAGE: "1",
};
const bin = (name) => path.join("node_modules", ".bin", name);

function run(label, command, args, extraEnv = {}) {
  const started = process.hrtime.bigint();
  const proc = spawnSync(command, args, { stdio: "inherit", env: { ...env, ...extraEnv } });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (proc.error) {
    console.error(`${label}: ${proc.error.message}`);
    process.exit(1);
  }
  if (proc.status !== 0) {
    console.error(`${label} failed (exit ${proc.status ?? proc.signal})`);
    process.exit(proc.status || 1);
  }
  console.log(`bluegreen-timing ${label} ${seconds.toFixed(2)}s`);
  return seconds;
}

// `prisma generate` reads DATABASE_URL from the schema but never connects: any value will do.
const generate = run("generate", bin("prisma"), ["generate"], {
  DATABASE_URL: process.env.DATABASE_URL || "postgresql://build@localhost:5432/build",
});
// Turbopack, not webpack: webpack's SWC loader salts each Server Action id with the absolute path
// of its source file, so two releases in two directories (releases/<time>-<sha>, on two hosts) get
// different ids even with the same NEXT_SERVER_ACTIONS_ENCRYPTION_KEY, and a form rendered by one
// colour fails on the other ("Failed to find Server Action"). Turbopack hashes project-relative
// paths: same key, same ids, wherever the release is built (checked on this machine).
const build = run("next-build", bin("next"), ["build", "--turbopack"]);
fs.writeFileSync(
  path.join(".next", "bluegreen-build.json"),
  JSON.stringify({ generateSeconds: generate, nextBuildSeconds: build }) + "\n",
);
