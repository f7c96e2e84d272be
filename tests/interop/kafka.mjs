// Kafka interop: the CloudEvents SDK's Kafka binding over kafkajs, against
// libevbus's kafka:// backend, both directions, structured and binary
// mode, on a librdkafka mock cluster (tools/kafka-mock).
//
//   node kafka.mjs DRIVER KAFKA_MOCK
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { once } from "node:events";
import {
  load, skip, fixtures, runDriver, startConsumer, compareToDriver,
  compareFromEvbus, jsonLine, runChecks,
} from "./lib.mjs";

const [driver, mockExe] = process.argv.slice(2);
if (!driver || !mockExe) skip("usage: kafka.mjs DRIVER KAFKA_MOCK");
const [{ CloudEvent, Kafka }, kafkajs] = await load("cloudevents", "kafkajs");
process.env.KAFKAJS_NO_PARTITIONER_WARNING = "1";

// A fresh mock cluster; its stdin keeps it alive.
const mock = spawn(mockExe, ["--brokers", "1"], {
  stdio: ["pipe", "pipe", "inherit"],
});
const firstLine = await new Promise((resolve, reject) => {
  const rl = createInterface({ input: mock.stdout });
  rl.once("line", resolve);
  mock.once("exit", () => reject(new Error("kafka mock exited")));
});
if (!firstLine.startsWith("BROKERS=")) throw new Error(firstLine);
const brokers = firstLine.slice(8);
const url = `kafka://${brokers}?kafka.consumer.session.timeout.ms=6000`;

const kafka = new kafkajs.Kafka({
  clientId: "interop-peer",
  brokers: brokers.split(","),
  logLevel: kafkajs.logLevel.ERROR,
});
const producer = kafka.producer();
await producer.connect();

// A message the SDK built, made sendable by kafkajs: header values as
// strings (absent ones dropped), the value as bytes.
function sendable(m) {
  const headers = {};
  for (const [k, v] of Object.entries(m.headers))
    if (v !== undefined && v !== null) headers[k] = String(v);
  let value = m.value;
  if (value instanceof Uint8Array) value = Buffer.from(value);
  else if (value !== undefined && value !== null && typeof value !== "string")
    value = JSON.stringify(value);
  return { key: m.key ?? null, value: value ?? null, headers };
}

// Reads n records of topic with a fresh group; returns them with string
// headers and keys, as the SDK's Kafka.toEvent expects.
async function readRecords(topic, n) {
  const consumer = kafka.consumer({ groupId: `peer-${topic}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await new Promise((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error(
      `only ${got.length} of ${n} records on ${topic}`)), 120000);
    consumer.run({
      eachMessage: async ({ message }) => {
        const headers = {};
        for (const [k, v] of Object.entries(message.headers || {}))
          headers[k] = Buffer.isBuffer(v) ? v.toString("utf8") : v;
        got.push({
          key: message.key ? message.key.toString("utf8") : undefined,
          value: message.value,
          headers,
        });
        if (got.length === n) {
          clearTimeout(guard);
          resolve();
        }
      },
    });
  });
  await consumer.disconnect();
  return got;
}

// The SDK decodes a record (not strictly: it passes strict=false), then
// compareFromEvbus validates strictly.
function toEvent(rec) {
  const m = { ...rec };
  // SDK 9 refuses a record without a value ("Value is null or undefined"),
  // which is how the binding writes an event without data: give it an
  // empty one and compare with emptyIsNone
  if (m.value === null || m.value === undefined) m.value = Buffer.alloc(0);
  const ct = m.headers["content-type"] || "";
  if (ct.startsWith("application/cloudevents") && m.value)
    m.value = m.value.toString("utf8");
  return Kafka.toEvent(m);
}

async function peerToEvbus(mode) {
  const topic = `peer-to-evbus-${mode}`;
  const evs = fixtures(CloudEvent, `k${mode}`);
  const msgs = evs.map((e) => sendable(Kafka[mode](e)));
  const consumer = await startConsumer(driver,
    [url, topic, "evbus", String(evs.length)]);
  await producer.send({ topic, messages: msgs });
  const got = await consumer.events();
  for (const [i, ev] of evs.entries()) {
    const g = got.find((x) => x.id === ev.id);
    if (!g) throw new Error(`${ev.id} not received`);
    compareToDriver(g, ev, mode === "binary" ? msgs[i].value : undefined);
  }
  if (mode === "binary") {
    // no content-type header (the event has no datacontenttype): none
    // is invented and JSON data stays the bytes that were sent
    const g = got.find((x) => x.id.endsWith("-noct"));
    if (g.datacontenttype !== null) throw new Error("invented content type");
  }
}

async function evbusToPeer(mode) {
  const topic = `evbus-to-peer-${mode}`;
  const evs = fixtures(CloudEvent, `e${mode}`);
  const r = await runDriver(driver,
    ["publish", `${url}&content_mode=${mode}`, topic],
    evs.map(jsonLine).join("\n") + "\n");
  if (r.code !== 0) throw new Error(`driver publish: ${r.stderr}`);
  const recs = await readRecords(topic, evs.length);
  for (const ev of evs) {
    const rec = recs.find((x) => {
      const id = x.headers.ce_id ||
        (x.value && JSON.parse(x.value.toString("utf8")).id);
      return id === ev.id;
    });
    if (!rec) throw new Error(`${ev.id} not read`);
    if (mode === "structured" &&
        rec.headers["content-type"] !== "application/cloudevents+json")
      throw new Error(`content-type ${rec.headers["content-type"]}`);
    // the key is the partitionkey extension in both modes
    if (ev.partitionkey && rec.key !== ev.partitionkey)
      throw new Error(`key ${rec.key}, want ${ev.partitionkey}`);
    if (mode === "binary" && !ev.datacontenttype &&
        "content-type" in rec.headers)
      throw new Error("binary record has a content-type header");
    compareFromEvbus(toEvent(rec), ev,
                     { emptyIsNone: mode === "binary" && !rec.value });
  }
}

try {
  await runChecks([
    ["SDK Kafka.structured -> kafkajs -> libevbus", () => peerToEvbus("structured")],
    ["SDK Kafka.binary -> kafkajs -> libevbus", () => peerToEvbus("binary")],
    ["libevbus structured -> kafkajs -> SDK Kafka.toEvent", () => evbusToPeer("structured")],
    ["libevbus binary -> kafkajs -> SDK Kafka.toEvent", () => evbusToPeer("binary")],
  ]);
} finally {
  await producer.disconnect();
  mock.stdin.end();
  mock.kill();
  await once(mock, "exit").catch(() => {});
}
