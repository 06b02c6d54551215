// A long-running TypeScript worker: joins GROUP as PID and serves `tsGreet`,
// so a Python workflow can rpc to it. Prints one JSON line once its event
// stream is open, which is when it can be sent work.
//
//   node --import ./polyfill.mjs worker.mjs URL GROUP PID
import { Resonate } from "@resonatehq/sdk";

const [url, group, pid] = process.argv.slice(2);

let announced = false;
const logger = {
  debug() {},
  info(_fields, msg) {
    if (msg === "adapter connected" && !announced) {
      announced = true;
      process.stdout.write(`${JSON.stringify({ ready: true, group, pid })}\n`);
    }
  },
  warn(fields, msg) {
    process.stderr.write(`warn: ${msg} ${JSON.stringify(fields)}\n`);
  },
  error(fields, msg) {
    process.stderr.write(`error: ${msg} ${JSON.stringify(fields)}\n`);
  },
};

const resonate = new Resonate({ url, group, pid, logger });

function* tsGreet(ctx, name) {
  const greeting = yield* ctx.run((_ctx, who) => `hello ${who}, from typescript`, name);
  return { greeting, servedBy: pid };
}

resonate.register("tsGreet", tsGreet);

const stop = async () => {
  await resonate.stop();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
