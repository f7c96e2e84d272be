// Redis interop in Dapr's pubsub.redis layout (XADD <topic> * data
// <CloudEvent JSON> metadata <JSON>): ioredis + the CloudEvents SDK
// against libevbus's redis:// backend, both directions, on a real
// redis-server started here.
//
//   node redis.mjs DRIVER
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import {
  load, skip, fixtures, freePort, startConsumer, runDriver, compareToDriver,
  compareFromEvbus, jsonLine, runChecks,
} from "./lib.mjs";

const [driver] = process.argv.slice(2);
if (!driver) skip("usage: redis.mjs DRIVER");
const [{ CloudEvent }, { default: Redis }] = await load("cloudevents",
                                                         "ioredis");
if (spawnSync("redis-server", ["--version"]).status !== 0)
  skip("redis-server is not installed");


const port = await freePort();
const server = spawn("redis-server", ["--port", String(port), "--bind",
  "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
const redis = new Redis({ port, host: "127.0.0.1", lazyConnect: true,
                          maxRetriesPerRequest: 1 });
for (let i = 0; ; i++) {
  try {
    await redis.connect();
    break;
  } catch (e) {
    if (i > 200) throw e;
    redis.disconnect();
    await new Promise((r) => setTimeout(r, 50));
  }
}
const url = `redis://127.0.0.1:${port}`;

async function peerToEvbus() {
  const topic = "dapr-peer-to-evbus";
  const evs = fixtures(CloudEvent, "rpeer");
  for (const ev of evs)
    await redis.xadd(topic, "*", "data", jsonLine(ev), "metadata",
                     JSON.stringify({ source: "ioredis" }));
  const c = await startConsumer(driver, [url, topic, "evbus",
                                         String(evs.length)]);
  const got = await c.events();
  for (const ev of evs) {
    const g = got.find((x) => x.id === ev.id);
    if (!g) throw new Error(`${ev.id} not received`);
    compareToDriver(g, ev);
  }
}

async function evbusToPeer() {
  const topic = "dapr-evbus-to-peer";
  const evs = fixtures(CloudEvent, "revbus");
  const r = await runDriver(driver, ["publish", url, topic],
                            evs.map(jsonLine).join("\n") + "\n");
  if (r.code !== 0) throw new Error(`driver publish: ${r.stderr}`);
  // read them as a Dapr app would: a consumer group, XREADGROUP
  await redis.xgroup("CREATE", topic, "daprapp", "0", "MKSTREAM");
  const res = await redis.xreadgroup("GROUP", "daprapp", "daprapp", "COUNT",
                                     100, "STREAMS", topic, ">");
  const entries = res[0][1];
  if (entries.length !== evs.length)
    throw new Error(`${entries.length} entries, want ${evs.length}`);
  for (const [, fields] of entries) {
    const f = {};
    for (let i = 0; i < fields.length; i += 2) f[fields[i]] = fields[i + 1];
    if (typeof f.data !== "string" || typeof f.metadata !== "string")
      throw new Error(`not Dapr's layout: ${Object.keys(f)}`);
    JSON.parse(f.metadata);
    const got = new CloudEvent(JSON.parse(f.data)); // strict
    const ev = evs.find((x) => x.id === got.id);
    if (!ev) throw new Error(`unexpected ${got.id}`);
    compareFromEvbus(got, ev);
  }
}

try {
  await runChecks([
    ["ioredis XADD (Dapr layout) -> libevbus", peerToEvbus],
    ["libevbus -> ioredis XREADGROUP (Dapr layout) -> SDK", evbusToPeer],
  ]);
} finally {
  redis.disconnect();
  server.kill();
  await once(server, "exit").catch(() => {});
}
