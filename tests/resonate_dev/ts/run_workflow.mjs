// Runs one durable workflow with the TypeScript SDK -- a step, a durable sleep,
// a second step -- and prints its result as one JSON line.
//
//   node --import ./polyfill.mjs run_workflow.mjs URL GROUP PID ID SLEEP_MS
import { Resonate } from "@resonatehq/sdk";

const [url, group, pid, id, sleepMs] = process.argv.slice(2);
const resonate = new Resonate({ url, group, pid, logLevel: "error" });

function* stepThenSleep(ctx, name, ms) {
  const before = yield* ctx.run((_ctx) => Date.now());
  const greeting = yield* ctx.run((_ctx, who) => `hello ${who}`, name);
  yield* ctx.sleep(ms);
  const after = yield* ctx.run((_ctx) => Date.now());
  return { greeting, slept: after - before };
}

resonate.register("stepThenSleep", stepThenSleep);

try {
  const result = await resonate.run(id, stepThenSleep, "durable", Number(sleepMs));
  process.stdout.write(`${JSON.stringify({ ok: true, result })}\n`);
  await resonate.stop();
  process.exit(0);
} catch (error) {
  process.stdout.write(`${JSON.stringify({ ok: false, error: String(error?.stack ?? error) })}\n`);
  await resonate.stop();
  process.exit(1);
}
