// Shared by the interop peers: loading the third-party packages (skip with
// exit 77 when they are missing), the events both directions exchange,
// running the C driver, and comparing every attribute, extension and data
// byte.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { once } from "node:events";
import { createInterface } from "node:readline";
import assert from "node:assert/strict";

export function skip(why) {
  console.log(`SKIP: ${why}`);
  process.exit(77);
}

// Imports the peers' packages, or skips: they come from `npm ci` in this
// folder (scripts/test runs it), which needs the npm registry.
export async function load(...names) {
  const out = [];
  for (const n of names) {
    try {
      out.push(await import(n));
    } catch (e) {
      skip(`node package '${n}' is not installed (run 'npm ci' in ` +
           `tests/interop; it needs the npm registry): ${e.code || e.message}`);
    }
  }
  return out;
}

// The events the peers exchange with libevbus: every context attribute,
// string/integer/boolean extensions, JSON, text, binary and no data, data
// without a datacontenttype, non-ASCII text. Built with the SDK (strict).
export function fixtures(CloudEvent, tag) {
  const base = {
    source: "/interop/peer",
    type: "interop.thing.happened",
    time: "2024-01-15T10:30:00.123Z",
  };
  return [
    new CloudEvent({
      ...base,
      id: `${tag}-json`,
      subject: "caf\u00e9 \u2615 100%",
      dataschema: "https://schema.test/thing.json",
      datacontenttype: "application/json",
      data: { a: 1, s: "\u00e9\u{1F600}", list: [true, null, 2.5], o: {} },
      partitionkey: "key-1",
      strext: "value with spaces",
      intext: 7,
      boolext: true,
    }),
    new CloudEvent({
      ...base,
      id: `${tag}-text`,
      datacontenttype: "text/plain; charset=utf-8",
      data: "plain text \u00e9 \u2615",
    }),
    new CloudEvent({
      ...base,
      id: `${tag}-binary`,
      datacontenttype: "application/octet-stream",
      data: new Uint8Array([0, 1, 2, 127, 128, 254, 255]),
    }),
    new CloudEvent({ ...base, id: `${tag}-nodata`, subject: "s" }),
    new CloudEvent({ ...base, id: `${tag}-noct`, data: { k: "v" } }),
  ];
}

// Runs the driver with args; resolves {code, stdout, stderr}.
export async function runDriver(driver, args, stdin = "") {
  const p = spawn(driver, args, { stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "", stderr = "";
  p.stdout.on("data", (d) => (stdout += d));
  p.stderr.on("data", (d) => (stderr += d));
  p.stdin.end(stdin);
  const [code] = await once(p, "exit");
  return { code, stdout, stderr };
}

// Starts `driver consume ...`; resolves once it printed READY. events()
// then resolves with the parsed lines once it exits.
export async function startConsumer(driver, args) {
  const p = spawn(driver, ["consume", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  p.stderr.on("data", (d) => (stderr += d));
  const lines = [];
  const rl = createInterface({ input: p.stdout });
  let ready;
  const readyP = new Promise((r) => (ready = r));
  rl.on("line", (l) => {
    if (l === "READY") ready();
    else if (l.trim()) lines.push(JSON.parse(l));
  });
  const exitP = once(p, "exit");
  await Promise.race([readyP, exitP]);
  return {
    proc: p,
    stderr: () => stderr,
    async events() {
      const [code] = await exitP;
      if (code !== 0) throw new Error(`driver consume exited ${code}: ${stderr}`);
      return lines;
    },
  };
}

// The data bytes a receiver must end up with for the SDK event ev.
export function expectedBytes(ev) {
  if (ev.data === undefined || ev.data === null) return null;
  if (ev.data instanceof Uint8Array) return Buffer.from(ev.data);
  if (typeof ev.data === "string" && !isJson(ev.datacontenttype))
    return Buffer.from(ev.data, "utf8");
  return null; // JSON: compared as a value
}

function isJson(ct) {
  if (!ct) return true;
  const t = ct.split(";")[0].trim().toLowerCase();
  return t.endsWith("/json") || t.endsWith("+json");
}

const ATTRS = ["id", "source", "type", "subject", "dataschema",
               "datacontenttype"];
const CORE = new Set([...ATTRS, "specversion", "time", "data", "data_base64"]);

// Checks what the driver printed for one event against the SDK event it
// came from. rawData: the bytes the sender put on the wire for binary
// modes (must arrive byte for byte), or undefined.
export function compareToDriver(got, ev, rawData) {
  assert.equal(got.specversion, "1.0");
  for (const a of ATTRS)
    assert.equal(got[a], ev[a] === undefined ? null : ev[a], `${ev.id}: ${a}`);
  assert.equal(Date.parse(got.time), Date.parse(ev.time), `${ev.id}: time`);
  const ext = {};
  for (const [k, v] of Object.entries(ev))
    if (!CORE.has(k) && v !== undefined && typeof v !== "function")
      ext[k] = String(v);
  assert.deepEqual(got.ext, ext, `${ev.id}: extensions`);
  const bytes = got.data_base64 === null ? null
                                         : Buffer.from(got.data_base64, "base64");
  if (rawData !== undefined) {
    assert.deepEqual(bytes, rawData === null ? null : Buffer.from(rawData),
                     `${ev.id}: data bytes`);
    return;
  }
  const want = expectedBytes(ev);
  if (want !== null || ev.data === undefined) {
    assert.deepEqual(bytes, want, `${ev.id}: data bytes`);
  } else {
    assert.ok(bytes, `${ev.id}: data missing`);
    assert.deepEqual(JSON.parse(bytes.toString("utf8")), ev.data,
                     `${ev.id}: JSON data`);
  }
}

// Checks an event the SDK decoded (strictly) from what libevbus wrote
// against the fixture it was published from.
export function compareFromEvbus(got, ev, { emptyIsNone = false } = {}) {
  got.validate(); // the SDK's strict validation, again, explicitly
  for (const a of ATTRS)
    assert.equal(got[a], ev[a], `${ev.id}: ${a}`);
  assert.equal(Date.parse(got.time), Date.parse(ev.time), `${ev.id}: time`);
  for (const [k, v] of Object.entries(ev))
    if (!CORE.has(k) && v !== undefined && typeof v !== "function")
      assert.equal(String(got[k]), String(v), `${ev.id}: extension ${k}`);
  if (ev.data === undefined && emptyIsNone) {
    assert.ok(got.data === undefined || got.data.length === 0,
              `${ev.id}: data where none was sent`);
  } else if (ev.data instanceof Uint8Array) {
    const d = got.data instanceof Uint8Array ? got.data
              : Buffer.from(got.data_base64 || "", "base64");
    assert.deepEqual(Buffer.from(d), Buffer.from(ev.data), `${ev.id}: bytes`);
  } else {
    // a binding without a JSON content type hands the SDK bytes
    let data = got.data;
    if (data instanceof Uint8Array) {
      const s = Buffer.from(data).toString("utf8");
      data = typeof ev.data === "string" ? s : JSON.parse(s);
    }
    assert.deepEqual(data, ev.data, `${ev.id}: data`);
  }
}

// The JSON format line libevbus decodes (the SDK writes it).
export function jsonLine(ev) {
  return JSON.stringify(ev.toJSON ? ev.toJSON() : ev);
}

// A TCP port nobody listens on right now.
export async function freePort() {
  const s = createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const { port } = s.address();
  s.close();
  await once(s, "close");
  return port;
}

// Runs named checks in order, prints each, exits 1 on the first failure.
export async function runChecks(checks) {
  let n = 0;
  for (const [name, fn] of checks) {
    try {
      await fn();
      console.log(`ok ${++n} - ${name}`);
    } catch (e) {
      console.log(`not ok ${++n} - ${name}`);
      console.log(e.stack || String(e));
      process.exit(1);
    }
  }
}
