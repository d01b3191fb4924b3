// Readiness: the database answers a `SELECT 1`.
import { db } from "../../../lib/db";

export const dynamic = "force-dynamic";
export const runtime = "nodejs";

export async function GET() {
  const headers = { "Cache-Control": "no-store" };
  try {
    await db().$queryRaw`SELECT 1`;
    return Response.json({ status: "ready" }, { headers });
  } catch (err) {
    // pg's messages name the host and user, never the password.
    const message = err instanceof Error ? err.message : String(err);
    return Response.json({ status: "unavailable", error: message }, { status: 503, headers });
  }
}
