// Prisma CLI configuration (`prisma generate`, `prisma migrate deploy`).
//
// Once this file exists the CLI no longer reads `.env`; it is loaded here the way Next.js loads it
// (the process environment wins), so `npm run migrate` in a release reads the shared settings
// through the release's `.env` link.
//
// Migrations run on Prisma's JavaScript schema engine over a driver adapter: the native engine
// would be downloaded from Prisma's servers at first use. `adapter-pg-7` is @prisma/adapter-pg 7.x
// under an alias: 6.19.3's adapter cannot read `_prisma_migrations` back ("Column type 'name' could
// not be deserialized", prisma/prisma#27403); the app itself uses 6.19.3 at run time.
import path from "node:path";
import { loadEnvConfig } from "@next/env";
import type { PrismaConfig } from "prisma";
import { PrismaPg } from "adapter-pg-7";

loadEnvConfig(process.cwd(), false, { info: () => {}, error: console.error });

// adapter-pg 7.10 runs a migration file by splitting it on every ";" and sending the pieces one by
// one, outside any transaction: a file that fails half-way leaves its first statements applied, and
// a ";" inside a string or a function body breaks the file. Prisma's native engine sends the whole
// file as one simple query, which PostgreSQL runs as one implicit transaction. Do the same here.
// (tests/integration/test_prisma_real.py checks that a failing file leaves nothing behind.)
type Script = { executeScript(script: string): Promise<void>; underlyingDriver(): unknown };

class PrismaPgOneScript extends PrismaPg {
  async connect() {
    const adapter = await super.connect();
    const raw = adapter as unknown as Script & { onError(err: unknown): never };
    const pool = raw.underlyingDriver() as { query(sql: string): Promise<unknown> };
    raw.executeScript = async (script: string) => {
      try {
        await pool.query(script);
      } catch (err) {
        raw.onError(err);
      }
    };
    return adapter;
  }
}

export default {
  experimental: { adapter: true },
  engine: "js",
  schema: path.join("prisma", "schema.prisma"),
  async adapter() {
    const url = process.env.DATABASE_URL;
    if (!url) {
      throw new Error("DATABASE_URL is not set (the release's .env links to shared/.env)");
    }
    return new PrismaPgOneScript({ connectionString: url });
  },
} satisfies PrismaConfig;
