/** @type {import('next').NextConfig} */
const nextConfig = {
  poweredByHeader: false,
  // No ESLint in this sample; type checking still runs during `next build`.
  eslint: { ignoreDuringBuilds: true },
};

export default nextConfig;
