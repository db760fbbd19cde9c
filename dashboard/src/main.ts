// The grid's dashboard. It reads the public API only, through a client generated from
// openapi/openapi.json (`npm run generate`: openapi-typescript, then openapi-fetch), and follows
// GET /v1/events (server-sent events, resumed with Last-Event-ID) for live updates. The key is
// kept in this tab's sessionStorage, never in a URL.

import createClient from "openapi-fetch";
import type { components, paths } from "./api";
import { verifyInclusion } from "./proof";

type Task = components["schemas"]["TaskView"];
type Node = components["schemas"]["NodeView"];

const KEY = "koprogo-grid-key";
const api = createClient<paths>({ baseUrl: location.origin });
api.use({
  onRequest({ request }) {
    request.headers.set("Authorization", `Bearer ${sessionStorage.getItem(KEY) ?? ""}`);
    return request;
  },
});

const $ = <T extends HTMLElement>(selector: string) => document.querySelector(selector) as T;
const main = () => $("#view");

function el(tag: string, attributes: Record<string, string> = {}, ...children: (Node_ | string)[]): HTMLElement {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  for (const child of children) element.append(child);
  return element;
}
type Node_ = globalThis.Node;

const eur = (value: number | null | undefined) => (value == null ? "—" : `€${value.toFixed(9)}`);
const kg = (value: number | null | undefined) => (value == null ? "—" : `${value.toFixed(9)} kg CO₂`);

// ---------------------------------------------------------------------------------------------
// Live: the event stream, per-second counts, recent tasks.

interface GridEvent {
  seq: number;
  type: string;
  payload: Record<string, unknown>;
}

const live = {
  events: [] as GridEvent[],
  perSecond: new Map<number, Map<string, number>>(),
  tasks: new Map<string, Task | { task_id: string; status: string }>(),
  listeners: new Set<() => void>(),
  lastId: "",
};

const STATUS_OF: Record<string, string> = {
  TaskAccepted: "queued",
  TaskAssigned: "assigned",
  TaskStarted: "running",
  TaskRequeued: "queued",
  TaskCompleted: "completed",
  TaskFailed: "failed",
  TaskCancelled: "cancelled",
  TaskRejected: "rejected",
};

function onEvent(event: GridEvent) {
  live.events.push(event);
  if (live.events.length > 5_000) live.events.splice(0, 1_000);
  const second = Math.floor(Date.now() / 1000);
  const counts = live.perSecond.get(second) ?? new Map();
  counts.set(event.type, (counts.get(event.type) ?? 0) + 1);
  live.perSecond.set(second, counts);
  for (const old of live.perSecond.keys()) if (old < second - 120) live.perSecond.delete(old);
  const taskId = event.payload.task_id as string | undefined;
  const status = STATUS_OF[event.type];
  if (taskId && status) {
    const known = live.tasks.get(taskId);
    live.tasks.set(taskId, { ...(known ?? { task_id: taskId }), status });
  }
  for (const listener of live.listeners) listener();
}

/** Follows GET /v1/events as server-sent events (fetch: EventSource cannot send a key). */
async function follow() {
  for (;;) {
    try {
      const headers: Record<string, string> = {
        Accept: "text/event-stream",
        Authorization: `Bearer ${sessionStorage.getItem(KEY) ?? ""}`,
      };
      if (live.lastId) headers["Last-Event-ID"] = live.lastId;
      const response = await fetch("/v1/events", { headers });
      if (!response.ok || !response.body) throw new Error(`events answered ${response.status}`);
      $("#live").textContent = "live";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let id = "";
          let data = "";
          let type = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
            else if (line.startsWith("event:")) type = line.slice(6).trim();
          }
          if (!data) continue;
          live.lastId = id || live.lastId;
          const envelope = JSON.parse(data);
          onEvent({ seq: parseInt(id, 10), type: type || envelope.type, payload: envelope.payload ?? {} });
        }
      }
    } catch (error) {
      console.warn(error);
    }
    $("#live").textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
}

// ---------------------------------------------------------------------------------------------
// Charts: a small SVG line chart.

function chart(series: { label: string; colour: string; values: number[] }[], height = 140): SVGElement {
  const width = 600;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 20}`);
  svg.setAttribute("class", "chart");
  const top = Math.max(1, ...series.flatMap((line) => line.values));
  series.forEach((line, index) => {
    const step = width / Math.max(1, line.values.length - 1);
    const points = line.values.map((value, at) => `${at * step},${height - (value / top) * (height - 10)}`).join(" ");
    const path = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    path.setAttribute("points", points);
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", line.colour);
    path.setAttribute("stroke-width", "2");
    svg.append(path);
    const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
    label.setAttribute("x", String(10 + index * 150));
    label.setAttribute("y", String(height + 16));
    label.setAttribute("fill", line.colour);
    label.textContent = line.label;
    svg.append(label);
  });
  const scale = document.createElementNS("http://www.w3.org/2000/svg", "text");
  scale.setAttribute("x", String(width - 80));
  scale.setAttribute("y", "12");
  scale.textContent = `max ${top.toFixed(1)}`;
  svg.append(scale);
  return svg;
}

// ---------------------------------------------------------------------------------------------
// Views.

function problem(error: unknown): string {
  const detail = (error as { detail?: string } | undefined)?.detail;
  return detail ?? "the API refused the request";
}

async function flowView() {
  const container = el("section");
  const recent = el("table", { id: "tasks" });
  container.append(el("h2", {}, "Flow"), el("div", { id: "flow-chart" }), el("h3", {}, "Recent tasks"), recent);
  main().replaceChildren(container);
  const { data, error } = await api.GET("/v1/tasks", { params: { query: { limit: 25 } } });
  if (error) return void container.append(el("p", { class: "error" }, problem(error)));
  for (const task of data.tasks.reverse()) live.tasks.set(task.task_id, task);
  const draw = () => {
    const now = Math.floor(Date.now() / 1000);
    const seconds = Array.from({ length: 60 }, (_, at) => now - 59 + at);
    const count = (type: string) => seconds.map((second) => live.perSecond.get(second)?.get(type) ?? 0);
    $("#flow-chart").replaceChildren(
      chart([
        { label: "queued", colour: "#888", values: count("TaskAccepted") },
        { label: "assigned", colour: "#2a7ab0", values: count("TaskAssigned") },
        { label: "running", colour: "#b07a2a", values: count("TaskStarted") },
        { label: "completed", colour: "#2a9d3a", values: count("TaskCompleted") },
      ]),
    );
    const rows = [...live.tasks.values()].reverse().slice(0, 25).map((task) => {
      const row = el("tr", { "data-task": task.task_id, class: "clickable" },
        el("td", {}, task.task_id), el("td", { class: `status ${task.status}` }, task.status));
      row.addEventListener("click", () => taskView(task.task_id));
      return row;
    });
    recent.replaceChildren(el("tr", {}, el("th", {}, "task"), el("th", {}, "status")), ...rows);
  };
  draw();
  setListener(draw);
}

async function taskView(taskId: string) {
  setListener(null);
  const container = el("section", { id: "task-detail" });
  main().replaceChildren(container);
  const { data: task, error } = await api.GET("/v1/tasks/{task_id}", { params: { path: { task_id: taskId } } });
  if (error || !task) return void container.append(el("p", { class: "error" }, problem(error)));
  container.append(
    el("h2", {}, `Task ${task.task_id}`),
    el("p", {}, `Status: `, el("strong", { id: "task-status" }, task.status), ` · ${task.kind} · attempts ${task.attempts}`),
    el("p", {}, `Credits: node ${eur(task.node_share_eur)} (${task.node_share_peur ?? 0} p€), cooperative ${eur(task.cooperative_share_eur)} (${task.cooperative_share_peur ?? 0} p€), ${kg(task.carbon_saved_kg)} (${task.carbon_saved_ng ?? 0} ng)`),
  );
  container.append(el("h3", {}, "Why it went where it went"));
  const assigned = task.assignment as Record<string, unknown> | null | undefined;
  if (!assigned) container.append(el("p", {}, "Not assigned yet."));
  else {
    container.append(
      el("p", { id: "assignment" }, `Attempt ${assigned.attempt} → node ${assigned.node_id}: `,
        el("code", {}, JSON.stringify(assigned.chosen ?? {})), " runner-up ",
        el("code", {}, JSON.stringify(assigned.runner_up ?? null))),
    );
  }
  container.append(el("h3", {}, "Results and quorum verdicts"));
  const results = el("table");
  results.append(el("tr", {}, el("th", {}, "attempt"), el("th", {}, "node"), el("th", {}, "verdict"), el("th", {}, "refusal")));
  for (const result of task.results) {
    results.append(el("tr", {}, el("td", {}, String(result.attempt)), el("td", {}, result.node_id),
      el("td", {}, result.verdict), el("td", {}, result.refusal ?? "")));
  }
  container.append(results, el("h3", {}, "Green proof"));
  const proofs = el("div", { id: "proofs" });
  container.append(proofs);
  if (task.status !== "completed") return void proofs.append(el("p", {}, "No credit yet."));
  for (let attempt = 0; attempt < 20; attempt++) {
    const { data } = await api.GET("/v1/proofs/tasks/{task_id}", { params: { path: { task_id: taskId } } });
    const sealed = data?.proofs.filter((proof) => proof.status === "sealed") ?? [];
    if (data && sealed.length > 0 && sealed.length === data.proofs.length) {
      for (const proof of data.proofs) {
        const broken = await verifyInclusion(proof);
        proofs.append(el("p", { class: broken ? "error" : "verified" },
          broken ? `Proof of node ${proof.node_id}: ${broken}` :
            `Inclusion proof verified in the browser: leaf ${proof.leaf_index} of block ${proof.block_height} (${proof.audit_path.length} hashes)`));
      }
      return;
    }
    if (data && data.links.length > 0) return void proofs.append(el("p", {}, `Chained as v1 link(s): ${data.links.length}`));
    proofs.replaceChildren(el("p", {}, "Proof pending: its block is not sealed yet…"));
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function fleetView() {
  const container = el("section");
  container.append(el("h2", {}, "Fleet"), el("div", { id: "fleet-chart" }));
  const table = el("table", { id: "nodes" });
  container.append(table);
  main().replaceChildren(container);
  const history: { solar: number; load: number }[] = [];
  const refresh = async () => {
    const { data, error } = await api.GET("/v1/nodes");
    if (error || !data) return void table.replaceChildren(el("tr", {}, el("td", {}, problem(error))));
    const nodes: Node[] = data;
    const solar = nodes.reduce((sum, node) => sum + (node.live?.solar_watts ?? 0), 0);
    const load = nodes.reduce((sum, node) => sum + (node.live?.cpu_usage ?? 0) * node.cpu_cores / 100, 0);
    history.push({ solar, load });
    if (history.length > 60) history.shift();
    $("#fleet-chart")?.replaceChildren(chart([
      { label: "solar surplus (W)", colour: "#d9a400", values: history.map((point) => point.solar) },
      { label: "load (busy cores)", colour: "#2a7ab0", values: history.map((point) => point.load) },
    ]));
    table.replaceChildren(
      el("tr", {}, ...["node", "online", "solar W", "load %", "eco score", "trust", "tasks done"].map((title) => el("th", {}, title))),
      ...nodes.map((node) => el("tr", {}, el("td", {}, node.name), el("td", {}, node.online ? "online" : "offline"),
        el("td", {}, String(node.live?.solar_watts ?? "—")), el("td", {}, String(node.live?.cpu_usage ?? "—")),
        el("td", {}, String(node.live?.eco_score ?? "—")), el("td", {}, String(node.trust)),
        el("td", {}, String(node.totals.tasks_completed)))),
    );
  };
  await refresh();
  const timer = setInterval(() => (document.body.contains(table) ? refresh() : clearInterval(timer)), 5_000);
}

async function creditsView() {
  const container = el("section");
  main().replaceChildren(container);
  const { data, error } = await api.GET("/v1/credits");
  if (error || !data) return void container.append(el("p", { class: "error" }, problem(error)));
  container.append(el("h2", {}, "Credits"), el("p", {}, `Cooperative fund: €${data.cooperative_fund_eur.toFixed(9)}`));
  const table = el("table");
  table.append(el("tr", {}, ...["node", "credited results", "euros", "CO₂"].map((title) => el("th", {}, title))));
  for (const node of data.nodes) {
    table.append(el("tr", {}, el("td", {}, node.node_id), el("td", {}, String(node.credited_results)),
      el("td", {}, eur(node.credits_eur)), el("td", {}, kg(node.carbon_saved_kg))));
  }
  container.append(table);
}

async function proofsView() {
  const container = el("section");
  main().replaceChildren(container);
  const verdict = el("p", { id: "chain-verdict" });
  const button = el("button", { id: "verify" }, "Verify the chain");
  button.addEventListener("click", async () => {
    verdict.textContent = "verifying…";
    const { data, error } = await api.GET("/v1/proofs/verify");
    if (error || !data) return void (verdict.textContent = problem(error));
    verdict.textContent = data.valid
      ? `Chain verified: ${data.length} v1 links, ${data.blocks} blocks, ${data.leaves} leaves; head ${data.head_hash}`
      : `Broken at block ${data.first_invalid_block ?? "—"}, leaf ${data.first_invalid_leaf ?? "—"}: ${data.reason}`;
  });
  container.append(el("h2", {}, "Proofs"), el("p", {}, "The chain: v1 links, then blocks under Merkle roots. Verifying reads it whole and names the first broken block and leaf."),
    button, verdict);
  button.click();
}

async function consentView() {
  const container = el("section");
  main().replaceChildren(container);
  const history = el("div", { id: "consent-history" });
  const table = el("table", { id: "owners" });
  container.append(el("h2", {}, "Consent"), table, history);
  const { data, error } = await api.GET("/v1/owners", { params: { query: { limit: 1000 } } });
  if (error || !data) return void table.replaceChildren(el("tr", {}, el("td", {}, problem(error))));
  table.append(el("tr", {}, ...["owner", "state", "clause version", "since"].map((title) => el("th", {}, title))));
  for (const owner of data.owners) {
    const row = el("tr", { class: "clickable" }, el("td", {}, owner.owner_id),
      el("td", {}, owner.granted ? "granted" : "revoked"), el("td", {}, owner.consent_version),
      el("td", {}, (owner.granted ? owner.granted_at : owner.revoked_at) ?? ""));
    row.addEventListener("click", async () => {
      const { data: one, error: failed } = await api.GET("/v1/owners/{owner_id}/consent",
        { params: { path: { owner_id: owner.owner_id } } });
      if (failed || !one) return void history.replaceChildren(el("p", { class: "error" }, problem(failed)));
      history.replaceChildren(el("h3", {}, `History of ${one.owner_id}`),
        ...one.history.map((change) => el("p", {}, `${change.at}: ${change.action} (version ${change.consent_version ?? "—"})`)));
    });
    table.append(row);
  }
  if (data.owners.length === 0) table.append(el("tr", {}, el("td", {}, "No owner has given consent yet.")));
}

let current: (() => void) | null = null;
function setListener(listener: (() => void) | null) {
  if (current) live.listeners.delete(current);
  current = listener;
  if (listener) live.listeners.add(listener);
}

const VIEWS: Record<string, () => Promise<void>> = {
  flow: flowView,
  fleet: fleetView,
  credits: creditsView,
  proofs: proofsView,
  consent: consentView,
};

function show(name: string) {
  setListener(null);
  void (VIEWS[name] ?? flowView)();
}

async function signIn(key: string) {
  sessionStorage.setItem(KEY, key);
  const { error } = await api.GET("/v1/stats");
  if (error) {
    sessionStorage.removeItem(KEY);
    $("#sign-in-error").textContent = problem(error);
    return;
  }
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  void follow();
  show("flow");
}

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    void signIn(($("#key") as HTMLInputElement).value.trim());
  });
  for (const link of document.querySelectorAll<HTMLElement>("[data-view]")) {
    link.addEventListener("click", () => show(link.dataset.view ?? "flow"));
  }
  $("#sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.reload();
  });
  const saved = sessionStorage.getItem(KEY);
  if (saved) void signIn(saved);
});
