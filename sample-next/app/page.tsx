// The home page: the latest shifts from the database and a form (a Server Action) to add one.
import { addShift } from "./actions";
import { db } from "../lib/db";
import { color, release } from "../lib/release";

export const dynamic = "force-dynamic";

export default async function Home() {
  const shifts = await db().shift.findMany({
    include: { attendant: true },
    orderBy: { id: "desc" },
    take: 20,
  });
  return (
    <main>
      <h1>JW Attendant Scheduler</h1>
      <p id="release">
        version {release.version} on <span id="color">{color()}</span>, commit{" "}
        {release.commit?.slice(0, 7) ?? "unknown"}, build {release.buildId}
      </p>
      <h2>Shifts</h2>
      <table>
        <thead>
          <tr>
            <th>attendant</th>
            <th>post</th>
            <th>starts</th>
            <th>notes</th>{/* release-2 */}
          </tr>
        </thead>
        <tbody>
          {shifts.map((s) => (
            <tr key={s.id} className="shift">
              <td>{s.attendant.name}</td>
              <td>{s.post}</td>
              <td>{s.startsAt.toISOString()}</td>
              <td className="notes">{s.notes ?? ""}</td>{/* release-2 */}
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Add a shift</h2>
      <form action={addShift}>
        <input name="name" placeholder="attendant" required />
        <input name="post" placeholder="post" required />
        <input name="notes" placeholder="notes" />{/* release-2 */}
        <button type="submit">Add</button>
      </form>
    </main>
  );
}
