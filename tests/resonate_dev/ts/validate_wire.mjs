// Checks every frame the stand-in sent against the TypeScript SDK's own
// validators: each response envelope with isResponse, each SSE message with
// isMessage. Reads the stand-in's wire log (JSON lines of {type, body}) and
// prints {checked, invalid: [...]}; exits 1 when any frame is invalid.
//
//   node validate_wire.mjs WIRE_LOG
import { readFileSync } from "node:fs";
import { isMessage, isResponse } from "@resonatehq/sdk";

const [path] = process.argv.slice(2);
const frames = readFileSync(path, "utf8").split("\n").filter((line) => line.trim() !== "");
const checked = { response: 0, message: 0 };
const invalid = [];
for (const line of frames) {
  const { type, body } = JSON.parse(line);
  checked[type] += 1;
  const ok = type === "response" ? isResponse(body) : isMessage(body);
  if (!ok) invalid.push({ type, body });
}
process.stdout.write(`${JSON.stringify({ checked, invalid })}\n`);
process.exit(invalid.length === 0 ? 0 : 1);
