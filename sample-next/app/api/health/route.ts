// Liveness for HAProxy and the deploy: no database, answers as soon as the server is up.
// The JSON contract is the one the deploy reads (bluegreen/service.py `_expect_commit`): `status`
// and the deployed `commit` (the release's REVISION), plus version, build id, colour and pid.
import { color, release } from "../../../lib/release";

export const dynamic = "force-dynamic";
export const runtime = "nodejs";

export function GET() {
  return Response.json(
    { status: "ok", ...release, color: color(), pid: process.pid },
    { headers: { "Cache-Control": "no-store" } },
  );
}
