"use server";
// The Server Action behind the form on the home page. Its id is derived from this file's path, the
// export name and NEXT_SERVER_ACTIONS_ENCRYPTION_KEY, so a page rendered by one colour can be
// submitted to the other after a switch only when both were built with the same key.
import { revalidatePath } from "next/cache";
import { db } from "../lib/db";

function field(form: FormData, name: string, max: number): string {
  const value = String(form.get(name) ?? "").trim();
  return value.slice(0, max);
}

export async function addShift(form: FormData): Promise<void> {
  const name = field(form, "name", 200);
  const post = field(form, "post", 200);
  if (!name || !post) {
    throw new Error("name and post are required");
  }
  const notes = field(form, "notes", 1000) || null; // release-2
  const startsAt = new Date();
  const endsAt = new Date(startsAt.getTime() + 2 * 60 * 60 * 1000);
  await db().shift.create({
    data: {
      post,
      startsAt,
      endsAt,
      notes, // release-2
      attendant: { create: { name } },
    },
  });
  revalidatePath("/");
}
