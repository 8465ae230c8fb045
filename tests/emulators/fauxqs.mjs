// A second, independent SQS/S3 emulator for the tests (fauxqs, from npm), bound to 127.0.0.1 only.
// fauxqs's own CLI listens on every address; this starts its app on loopback and prints the URL.
// Installed by .ci/run (or: npm install --prefix tests/emulators --no-package-lock).
import { buildApp } from "fauxqs";

const app = buildApp({ logger: false });
const address = await app.listen({ port: Number(process.env.FAUXQS_PORT || 0), host: "127.0.0.1" });
console.log(`fauxqs listening on ${address}`);
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => app.close().then(() => process.exit(0)));
}
