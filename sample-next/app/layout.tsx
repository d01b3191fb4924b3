import type { ReactNode } from "react";

// No next/font/google: the build must not need the network. System fonts only.
export const metadata = { title: "JW Attendant Scheduler" };

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body style={{ fontFamily: "system-ui, sans-serif", margin: "2rem" }}>{children}</body>
    </html>
  );
}
