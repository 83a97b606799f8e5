// A foreign crdtmem client written against docs/protocol.md with the real `yjs` package and nothing
// from crdtmem. tests/test_yjs_interop.py drives it to prove that the protocol document is enough to
// read and write a memory from another Yjs implementation.
//
// Usage: node yjs_client.mjs < request.json > response.json
//
// Request (JSON, binary fields base64):
//   {
//     "replica": "yjs-web",            // this client's replica id ([A-Za-z0-9_.-]{1,128})
//     "wall_ms": 1700000000000,        // optional injected wall clock; default Date.now()
//     "seqs": {channel: seq},          // the last sequence number this client used per channel
//     "payloads": [b64, ...],          // crdtmem.deltas payloads to merge first (protocol.md §7)
//     "docs": [{
//        "id": memory id,
//        "state": b64 | null,          // a full Yrs v1 document state to start from
//        "updates": [b64, ...],        // extra raw Yrs v1 updates to merge
//        "ops": [{"op": ...}, ...]     // one change: every op below in one transaction
//     }]
//   }
// Response (JSON):
//   {
//     "docs": [{"id", "view", "update": b64|null, "deps": b64|null, "hlc": str|null}],
//     "payload": b64 | null,           // a crdtmem.deltas payload carrying this client's deltas
//     "seqs": {channel: seq}
//   }
// Ops: set_content {value}, set_metadata {key, value}, remove_metadata {key}, add_tag {tag},
// remove_tag {tag}, increment {amount: decimal string}, add_item {item}, remove_item {item},
// append_message {role, text}, delete, resolve {field, value}.
//
// Errors go to stderr with exit status 1.

import { readFileSync } from "node:fs";
import * as Y from "yjs";
import { decode as msgpackDecode, encode as msgpackEncode } from "@msgpack/msgpack";

const FORMATS = new Set(["crdtmem.memory/1", "crdtmem.memory/2"]); // protocol.md §8
const PAYLOAD_FORMAT = "crdtmem.deltas";
const PAYLOAD_VERSION = 1; // what this client writes (unsigned deltas)
const PAYLOAD_VERSIONS_READ = [1, 2]; // version 2 adds the origin's signature, which a reader may ignore
const REGISTER_KINDS = new Set(["fact", "preference"]);
const WALL_DIGITS = 15;
const LOGICAL_DIGITS = 6;
const MAX_LOGICAL = 10 ** LOGICAL_DIGITS - 1;

class ProtocolError extends Error {}

// -- canonical JSON (protocol.md §2.4) -----------------------------------------------------------

function byCodePoint(a, b) {
  const x = Array.from(a);
  const y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort(byCodePoint);
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  if (typeof value === "number" && !Number.isFinite(value)) {
    throw new ProtocolError(`non-finite number ${value} has no JSON form`);
  }
  return JSON.stringify(value);
}

// -- HLC (protocol.md §2.1) ----------------------------------------------------------------------

function parseHlc(text) {
  const m = /^(\d{15})\.(\d{6})$/.exec(text);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

function formatHlc([wall, logical]) {
  return `${String(wall).padStart(WALL_DIGITS, "0")}.${String(logical).padStart(LOGICAL_DIGITS, "0")}`;
}

class Clock {
  constructor(wall) {
    this.wall = wall;
    this.last = [0, 0];
  }

  observe(text) {
    const stamp = typeof text === "string" ? parseHlc(text) : null;
    if (stamp && (stamp[0] > this.last[0] || (stamp[0] === this.last[0] && stamp[1] > this.last[1]))) {
      this.last = stamp;
    }
  }

  now() {
    const wall = this.wall();
    if (wall > this.last[0]) this.last = [wall, 0];
    else if (this.last[1] >= MAX_LOGICAL) this.last = [this.last[0] + 1, 0];
    else this.last = [this.last[0], this.last[1] + 1];
    return formatHlc(this.last);
  }
}

// -- reading (protocol.md §4) --------------------------------------------------------------------

function dotEntry(raw) {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw) || raw instanceof Y.AbstractType) {
    return null;
  }
  const { v, hlc, by } = raw;
  return typeof v === "string" && typeof hlc === "string" && typeof by === "string" ? { v, hlc, by } : null;
}

function compareDots(a, b) {
  if (a.hlc !== b.hlc) return a.hlc < b.hlc ? -1 : 1;
  if (a.by !== b.by) return a.by < b.by ? -1 : 1;
  return 0;
}

/** Live entries of one register, highest (hlc, replica) first. prefix "" = the whole map. */
function siblings(ymap, prefix = "") {
  const found = [];
  ymap.forEach((raw, key) => {
    if (prefix && !key.startsWith(prefix)) return;
    const entry = dotEntry(raw);
    if (entry) found.push({ ...entry, key });
  });
  return found.sort((a, b) => compareDots(b, a));
}

function inConflict(entries) {
  return new Set(entries.map((e) => e.v)).size > 1;
}

function metadataFields(ymap) {
  const fields = new Set();
  for (const key of ymap.keys()) {
    const at = key.lastIndexOf("#");
    if (at >= 0) fields.add(key.slice(0, at));
  }
  return [...fields].sort(byCodePoint);
}

function orsetElements(ymap) {
  const entries = siblings(ymap).reverse(); // earliest dot first
  const seen = new Map();
  for (const e of entries) if (!seen.has(e.v)) seen.set(e.v, e);
  return [...seen.values()].map((e) => JSON.parse(e.v));
}

function counterTotals(raw) {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) return [0n, 0n];
  try {
    return [BigInt(raw.p ?? "0"), BigInt(raw.n ?? "0")];
  } catch {
    return [0n, 0n];
  }
}

function counterValue(ymap) {
  let total = 0n;
  ymap.forEach((raw) => {
    const [p, n] = counterTotals(raw);
    total += p - n;
  });
  return total;
}

function messages(yarray) {
  const keys = ["id", "role", "text", "hlc", "by"];
  return yarray
    .toArray()
    .filter((m) => m && typeof m === "object" && keys.every((k) => typeof m[k] === "string"))
    .map((m) => Object.fromEntries(keys.map((k) => [k, m[k]])));
}

function roots(doc) {
  return {
    header: doc.getMap("header"),
    content: doc.getMap("content"),
    messages: doc.getArray("messages"),
    lifecycle: doc.getMap("lifecycle"),
    metadata: doc.getMap("metadata"),
    tags: doc.getMap("tags"),
    embedding: doc.getMap("embedding"),
  };
}

function registerOf(r, kind, field) {
  if (field === "content") return REGISTER_KINDS.has(kind) ? [r.content, ""] : null;
  if (field === "lifecycle") return [r.lifecycle, ""];
  if (field.startsWith("metadata.")) return [r.metadata, `${field.slice("metadata.".length)}#`];
  return null;
}

function read(doc) {
  const r = roots(doc);
  if (!r.header.has("id")) throw new ProtocolError("document has no header (not a crdtmem memory)");
  const kind = r.header.get("kind");
  const stamps = [r.header.get("created") ?? ""]; // updated_at: the latest live stamp (§4.8)
  const latest = (ymap) => siblings(ymap)[0]?.hlc ?? "";
  let content;
  if (REGISTER_KINDS.has(kind)) {
    const winner = siblings(r.content)[0];
    content = winner ? JSON.parse(winner.v) : "";
    stamps.push(winner?.hlc ?? "");
  } else if (kind === "list") {
    content = orsetElements(r.content);
    stamps.push(latest(r.content));
  } else if (kind === "counter") {
    content = counterValue(r.content).toString();
    r.content.forEach((raw) => typeof raw?.hlc === "string" && stamps.push(raw.hlc));
  } else if (kind === "conversation") {
    content = messages(r.messages);
    stamps.push(...content.map((m) => m.hlc));
  } else {
    throw new ProtocolError(`unknown kind ${kind}`);
  }
  const metadata = {};
  const fields = ["lifecycle"];
  if (REGISTER_KINDS.has(kind)) fields.push("content");
  for (const key of metadataFields(r.metadata)) {
    const winner = siblings(r.metadata, `${key}#`)[0];
    if (winner) {
      metadata[key] = JSON.parse(winner.v);
      stamps.push(winner.hlc);
    }
    fields.push(`metadata.${key}`);
  }
  const conflicts = {};
  for (const field of fields.sort(byCodePoint)) {
    const [ymap, prefix] = registerOf(r, kind, field);
    const entries = siblings(ymap, prefix);
    if (inConflict(entries)) conflicts[field] = entries.map((e) => [JSON.parse(e.v), e.hlc, e.by]);
  }
  const lifecycle = siblings(r.lifecycle);
  stamps.push(...lifecycle.map((e) => e.hlc), latest(r.tags));
  return {
    format: r.header.get("format"),
    id: r.header.get("id"),
    kind,
    content,
    metadata,
    tags: orsetElements(r.tags),
    source: r.header.get("source"),
    scope: r.header.get("scope"),
    created_at: r.header.get("created"),
    updated_at: stamps.reduce((a, b) => (b > a ? b : a), ""),
    deleted: lifecycle.length > 0 && JSON.parse(lifecycle[0].v) === "deleted",
    conflicts: Object.keys(conflicts),
    conflict_values: conflicts,
  };
}

// -- channels (protocol.md §6) -------------------------------------------------------------------

const RESERVED = new Set(["%", ":", "*", ",", " "]);

function escapeId(id) {
  // protocol.md §6.1: each reserved character as %XX, the upper-case hex of its UTF-8 bytes
  let out = "";
  for (const ch of id) {
    if (!RESERVED.has(ch)) out += ch;
    else for (const byte of new TextEncoder().encode(ch)) out += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

function channelsOf(scope) {
  const found = new Set();
  if (scope.user_id) found.add(`user:${escapeId(scope.user_id)}:memories`);
  if (scope.tenant_id && (scope.shared || !scope.user_id)) found.add(`tenant:${escapeId(scope.tenant_id)}:shared`);
  for (const topic of scope.topics ?? []) found.add(`topic:${escapeId(topic)}:updates`);
  if (!scope.user_id && !scope.tenant_id) found.add("system:global");
  return [...found].sort(byCodePoint);
}

// -- writing (protocol.md §5) --------------------------------------------------------------------

function observeAll(doc, clock) {
  const r = roots(doc);
  clock.observe(r.header.get("created"));
  for (const ymap of [r.content, r.lifecycle, r.metadata, r.tags, r.embedding]) {
    ymap.forEach((raw) => clock.observe(raw && raw.hlc));
  }
  for (const m of r.messages.toArray()) clock.observe(m && m.hlc);
}

function writeRegister(ymap, prefix, value, dot) {
  for (const key of [...ymap.keys()]) {
    if (!prefix || key.startsWith(prefix)) ymap.delete(key);
  }
  ymap.set(`${prefix}${dot.by}`, { v: canonical(value), hlc: dot.hlc, by: dot.by }); // protocol.md §5.2
}

function checkMetadataKey(key) {
  if (typeof key !== "string" || !key || key.includes("#") || key.length > 256) {
    throw new ProtocolError(`bad metadata key ${JSON.stringify(key)}`);
  }
  return key;
}

function change(doc, ops, replica, clock) {
  const r = roots(doc);
  if (!FORMATS.has(r.header.get("format"))) {
    throw new ProtocolError(`refusing to write format ${r.header.get("format")}; this client writes ${[...FORMATS]}`);
  }
  const kind = r.header.get("kind");
  observeAll(doc, clock);
  let last = null; // the change's last dot names its delta (protocol.md §5.1)
  const nextDot = () => {
    const hlc = clock.now();
    const dot = { hlc, by: replica, key: `${replica}:${hlc}` };
    last = dot;
    return dot;
  };
  let live = null;
  const liveDot = () => {
    if (live) return live;
    const lifecycle = siblings(r.lifecycle);
    if (lifecycle.length && !inConflict(lifecycle) && JSON.parse(lifecycle[0].v) === "deleted") {
      throw new ProtocolError(`memory ${r.header.get("id")} is deleted`);
    }
    live = nextDot();
    writeRegister(r.lifecycle, "", "active", live); // every update re-asserts "active"
    return live;
  };
  const requireKind = (wanted, op) => {
    if (kind !== wanted && !(wanted === "register" && REGISTER_KINDS.has(kind))) {
      throw new ProtocolError(`${op} does not apply to a ${kind}`);
    }
  };
  doc.transact(() => {
    for (const op of ops) {
      switch (op.op) {
        case "set_content":
          requireKind("register", op.op);
          writeRegister(r.content, "", op.value, liveDot());
          break;
        case "set_metadata":
          liveDot();
          writeRegister(r.metadata, `${checkMetadataKey(op.key)}#`, op.value, nextDot());
          break;
        case "remove_metadata": {
          liveDot();
          const prefix = `${checkMetadataKey(op.key)}#`;
          for (const key of [...r.metadata.keys()]) if (key.startsWith(prefix)) r.metadata.delete(key);
          break;
        }
        case "add_tag":
        case "add_item": {
          const target = op.op === "add_tag" ? r.tags : r.content;
          if (op.op === "add_item") requireKind("list", op.op);
          liveDot();
          const dot = nextDot();
          target.set(dot.key, { v: canonical(op.op === "add_tag" ? op.tag : op.item), hlc: dot.hlc, by: dot.by });
          break;
        }
        case "remove_tag":
        case "remove_item": {
          const target = op.op === "remove_tag" ? r.tags : r.content;
          if (op.op === "remove_item") requireKind("list", op.op);
          liveDot();
          const text = canonical(op.op === "remove_tag" ? op.tag : op.item);
          const doomed = [...target.entries()].filter(([, raw]) => dotEntry(raw)?.v === text);
          for (const [key] of doomed) target.delete(key);
          break;
        }
        case "increment": {
          requireKind("counter", op.op);
          const dot = liveDot();
          let [p, n] = counterTotals(r.content.get(replica)); // only ever our own entry
          const amount = BigInt(op.amount);
          if (amount >= 0n) p += amount;
          else n -= amount;
          r.content.set(replica, { p: p.toString(), n: n.toString(), hlc: dot.hlc });
          break;
        }
        case "append_message": {
          requireKind("conversation", op.op);
          const dot = liveDot();
          r.messages.push([{ id: dot.key, role: op.role, text: op.text, hlc: dot.hlc, by: dot.by }]);
          break;
        }
        case "delete":
          writeRegister(r.lifecycle, "", "deleted", nextDot());
          break;
        case "resolve": {
          const register = registerOf(r, kind, op.field);
          if (!register) throw new ProtocolError(`no register field ${op.field}`);
          writeRegister(register[0], register[1], op.value, nextDot());
          break;
        }
        default:
          throw new ProtocolError(`unknown op ${op.op}`);
      }
    }
  });
  return last;
}

// -- exchange (protocol.md §7) -------------------------------------------------------------------

function decodePayload(bytes) {
  const body = msgpackDecode(bytes);
  if (!body || body.format !== PAYLOAD_FORMAT) throw new ProtocolError("not a crdtmem.deltas payload");
  if (!PAYLOAD_VERSIONS_READ.includes(body.v)) throw new ProtocolError(`unsupported payload version ${body.v}`);
  return body.deltas.map(([uid, origin, docId, hlc, deps, update, seqs]) => ({
    uid,
    origin,
    docId,
    hlc,
    deps,
    update,
    seqs,
  }));
}

function covers(doc, deps) {
  const have = Y.decodeStateVector(Y.encodeStateVector(doc));
  for (const [client, clock] of Y.decodeStateVector(deps)) {
    if ((have.get(client) ?? 0) < clock) return false;
  }
  return true;
}

/** Apply deltas whose dependencies are met, repeatedly (causal delivery, protocol.md §7.3). */
function applyCausally(deltas, docFor) {
  let waiting = deltas;
  let progress = true;
  while (waiting.length && progress) {
    progress = false;
    const still = [];
    for (const delta of waiting) {
      const doc = docFor(delta.docId);
      if (covers(doc, delta.deps)) {
        Y.applyUpdate(doc, delta.update);
        progress = true;
      } else {
        still.push(delta);
      }
    }
    waiting = still;
  }
  if (waiting.length) throw new ProtocolError(`${waiting.length} deltas lack their dependencies`);
}

// -- main ----------------------------------------------------------------------------------------

const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const unb64 = (text) => new Uint8Array(Buffer.from(text, "base64"));

function main() {
  const request = JSON.parse(readFileSync(0, "utf8"));
  const replica = request.replica ?? "yjs-web";
  if (!/^[A-Za-z0-9_.-]{1,128}$/.test(replica)) throw new ProtocolError(`bad replica id ${replica}`);
  const clock = new Clock(request.wall_ms !== undefined ? () => request.wall_ms : () => Date.now());
  const seqs = { ...(request.seqs ?? {}) };

  const docs = new Map();
  const docFor = (id) => {
    if (!docs.has(id)) docs.set(id, new Y.Doc({ guid: id }));
    return docs.get(id);
  };
  for (const spec of request.docs ?? []) {
    const doc = docFor(spec.id);
    if (spec.state) Y.applyUpdate(doc, unb64(spec.state));
    for (const update of spec.updates ?? []) Y.applyUpdate(doc, unb64(update));
  }
  for (const payload of request.payloads ?? []) applyCausally(decodePayload(unb64(payload)), docFor);

  const results = [];
  const deltas = [];
  for (const spec of request.docs ?? []) {
    const doc = docFor(spec.id);
    const result = { id: spec.id, update: null, deps: null, hlc: null };
    if (spec.ops?.length) {
      const deps = Y.encodeStateVector(doc);
      let update = null;
      const capture = (u) => (update = u);
      doc.on("update", capture);
      const named = change(doc, spec.ops, replica, clock);
      doc.off("update", capture);
      if (update && named) {
        const channels = channelsOf(roots(doc).header.get("scope"));
        const entry = {};
        for (const channel of channels) entry[channel] = seqs[channel] = (seqs[channel] ?? 0) + 1;
        deltas.push([`${replica}:${named.hlc}`, replica, spec.id, named.hlc, deps, update, entry]);
        Object.assign(result, { update: b64(update), deps: b64(deps), hlc: named.hlc });
      }
    }
    result.view = read(doc);
    results.push(result);
  }
  const vectors = Object.fromEntries(Object.entries(seqs).map(([c, s]) => [c, { [replica]: s }]));
  const payload = deltas.length
    ? b64(msgpackEncode({ format: PAYLOAD_FORMAT, v: PAYLOAD_VERSION, from: replica, vectors, deltas }))
    : null;
  process.stdout.write(JSON.stringify({ docs: results, payload, seqs }));
}

try {
  main();
} catch (error) {
  process.stderr.write(`yjs_client: ${error instanceof ProtocolError ? error.message : error.stack}\n`);
  process.exit(1);
}
