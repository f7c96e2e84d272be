// HTTP interop (the Dapr contract): the CloudEvents SDK's HTTP binding
// against libevbus's dapr:// backend.
//   - peer -> libevbus: HTTP.structured and HTTP.binary requests POSTed to
//     the app server a dapr:// subscription runs (as a sidecar delivers);
//   - libevbus -> peer: this script plays the sidecar's publish API and
//     decodes what libevbus POSTs with HTTP.toEvent, strictly.
//
//   node http.mjs DRIVER
import { createServer } from "node:http";
import { once } from "node:events";
import assert from "node:assert/strict";
import {
  load, skip, fixtures, freePort, startConsumer, runDriver, compareToDriver,
  compareFromEvbus, jsonLine, runChecks,
} from "./lib.mjs";

const [driver] = process.argv.slice(2);
if (!driver) skip("usage: http.mjs DRIVER");
const [{ CloudEvent, HTTP }] = await load("cloudevents");


// The HTTP binding percent-encodes header values outside printable ASCII
// (and space, '"', '%'); SDK 9 leaves that to the sender.
function pctEncode(v) {
  return Array.from(Buffer.from(String(v), "utf8")).map((b) =>
    b > 0x20 && b < 0x7f && b !== 0x22 && b !== 0x25
      ? String.fromCharCode(b)
      : "%" + b.toString(16).toUpperCase().padStart(2, "0")).join("");
}

async function post(port, path, headers, body) {
  let res;
  try {
    res = await fetch(`http://127.0.0.1:${port}${path}`, {
      method: "POST", headers, body,
    });
  } catch (e) {
    throw new Error(`POST ${path}: ${e.cause || e}`);
  }
  return { status: res.status, text: await res.text() };
}

async function waitHealthy(port) {
  for (let i = 0; i < 600; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (r.status === 200) return;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("the app server never answered /healthz");
}

async function peerToEvbus(mode) {
  const topic = `http-${mode}`;
  const evs = fixtures(CloudEvent, `h${mode}`);
  const app = await freePort(), nobody = await freePort();
  const c = await startConsumer(driver, [
    `dapr://127.0.0.1:${nobody}?pubsub=pubsub&app_port=${app}` +
      "&sidecar_wait_ms=0",
    topic, "evbus", String(evs.length)]);
  await waitHealthy(app);
  const sent = [];
  for (const ev of evs) {
    const m = HTTP[mode](ev);
    const headers = {};
    for (const [k, v] of Object.entries(m.headers))
      headers[k] = k.startsWith("ce-") ? pctEncode(v) : String(v);
    const body = m.body instanceof Uint8Array ? Buffer.from(m.body) : m.body;
    const r = await post(app, `/evbus/pubsub/${topic}`, headers, body)
      .catch((e) => {
        throw new Error(`${e.message}; driver: ${c.proc.exitCode} ${c.stderr()}`);
      });
    assert.equal(r.status, 200, `${ev.id}: HTTP ${r.status} ${r.text}`);
    assert.deepEqual(JSON.parse(r.text), { status: "SUCCESS" },
                     `${ev.id}: answer`);
    sent.push({ headers: m.headers, body });
  }
  const got = await c.events();
  for (const [i, ev] of evs.entries()) {
    const g = got.find((x) => x.id === ev.id);
    if (!g) throw new Error(`${ev.id} not received`);
    if (mode === "binary") {
      // Content-Type is datacontenttype in binary mode (the SDK sends
      // application/json when the event has none), the body is the data
      const ct = sent[i].headers["content-type"];
      const want = new CloudEvent({ ...ev, datacontenttype: ct }, false);
      const b = sent[i].body;
      compareToDriver(g, want, b === undefined || b === null ? null
                               : Buffer.from(b));
    } else {
      compareToDriver(g, ev);
    }
  }
}

async function evbusToPeer() {
  const topic = "http-from-evbus";
  const evs = fixtures(CloudEvent, "hevbus");
  const published = [];
  const sidecar = createServer((req, res) => {
    const chunks = [];
    req.on("data", (d) => chunks.push(d));
    req.on("end", () => {
      if (req.url.startsWith("/v1.0/healthz")) {
        res.writeHead(204).end();
      } else if (req.method === "POST" &&
                 req.url.startsWith(`/v1.0/publish/pubsub/${topic}`)) {
        published.push({ url: req.url, headers: req.headers,
                         body: Buffer.concat(chunks).toString("utf8") });
        res.writeHead(204).end();
      } else {
        res.writeHead(404).end();
      }
    });
  });
  sidecar.listen(0, "127.0.0.1");
  await once(sidecar, "listening");
  const port = sidecar.address().port;
  try {
    const r = await runDriver(driver,
      ["publish", `dapr://127.0.0.1:${port}?pubsub=pubsub`, topic],
      evs.map(jsonLine).join("\n") + "\n");
    if (r.code !== 0) throw new Error(`driver publish: ${r.stderr}`);
  } finally {
    sidecar.close();
  }
  assert.equal(published.length, evs.length);
  for (const p of published) {
    assert.ok(p.headers["content-type"].startsWith(
      "application/cloudevents+json"), p.headers["content-type"]);
    const got = HTTP.toEvent({ headers: p.headers, body: p.body });
    const ev = evs.find((x) => x.id === got.id);
    if (!ev) throw new Error(`unexpected ${got.id}`);
    compareFromEvbus(got, ev);
    if (ev.partitionkey)
      assert.ok(p.url.includes(`metadata.partitionKey=${ev.partitionkey}`),
                p.url);
  }
}

await runChecks([
  ["SDK HTTP.structured -> dapr:// app server", () => peerToEvbus("structured")],
  ["SDK HTTP.binary -> dapr:// app server", () => peerToEvbus("binary")],
  ["libevbus dapr:// publish -> SDK HTTP.toEvent", evbusToPeer],
]);
