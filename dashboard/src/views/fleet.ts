// Fleet: the nodes, online first (offline ones folded away), with their cores, running tasks,
// sun, load and last sign of life; the fleet's sun, load and running tasks over time, each on
// its own axis. A page per node.

import { api, problem, type NodeView } from "../client";
import { lineChart } from "../charts";
import { el, exact, facts, link, notice, row, table } from "../dom";
import { co2, energy, money, percent, shortId, watts, when } from "../format";
import { href } from "../router";
import { TASK_HEADERS, taskRow } from "./tasks";

const lastSeen = (node: NodeView) =>
  node.live?.last_heartbeat ? when(node.live.last_heartbeat) : node.last_result_at ? when(node.last_result_at) : "never";

function nodeRow(node: NodeView, operator: boolean): HTMLTableRowElement {
  const cells: (Node | string)[] = [
    link(href(["nodes", node.node_id]), node.name, { title: node.node_id }),
    node.online ? el("span", { class: "status completed" }, "online") : el("span", { class: "status offline" }, "offline"),
  ];
  if (operator) cells.push(node.organization_name);
  cells.push(String(node.cpu_cores), node.live ? `${node.live.claimed} of ${node.cpu_cores}` : "—",
    watts(node.live?.solar_watts), percent(node.live?.cpu_usage), node.live ? node.live.eco_score.toFixed(2) : "—",
    String(node.trust), String(node.totals.tasks_completed), lastSeen(node));
  return row(cells, { "data-node": node.node_id });
}

export async function fleetView(root: HTMLElement, signal: AbortSignal, operator: boolean) {
  const charts = el("div", { class: "charts", id: "fleet-charts" });
  const online = el("div", { id: "nodes-online" });
  const offline = el("div", { id: "nodes-offline" });
  root.replaceChildren(el("h2", {}, "Fleet"), charts, online, offline);
  const history: { at: number; solar: number; load: number; running: number; cores: number }[] = [];
  const headers = ["Node", "State", ...(operator ? ["Organisation"] : []), "Cores", "Busy cores", "Sun", "Load", "Eco score",
    "Trust", "Tasks done", "Last seen"];
  const refresh = async () => {
    const { data, error } = await api.GET("/v1/nodes");
    if (signal.aborted) return;
    if (error || !data) return void online.replaceChildren(notice(problem(error), "error"));
    const live = data.filter((node) => node.online);
    history.push({
      at: Math.floor(Date.now() / 1000),
      solar: live.reduce((sum, node) => sum + (node.live?.solar_watts ?? 0), 0),
      load: live.reduce((sum, node) => sum + ((node.live?.cpu_usage ?? 0) * node.cpu_cores) / 100, 0),
      running: live.reduce((sum, node) => sum + (node.live?.claimed ?? 0), 0),
      cores: live.reduce((sum, node) => sum + node.cpu_cores, 0),
    });
    if (history.length > 60) history.shift();
    const times = history.map((point) => point.at);
    charts.replaceChildren(
      lineChart("Sun on the fleet", "W", times, [{ label: "solar", colour: "#8a5a00", values: history.map((point) => point.solar) }]),
      lineChart("Load", "busy cores", times, [{ label: "load", colour: "#1a5fb4", values: history.map((point) => point.load) }]),
      lineChart("Tasks on nodes", "tasks", times, [
        { label: "running or assigned", colour: "#1e6b2a", values: history.map((point) => point.running) },
        { label: "cores online", colour: "#595959", values: history.map((point) => point.cores) },
      ]),
    );
    online.replaceChildren(live.length === 0 ? notice("No node is online.")
      : table(`${live.length} nodes online`, headers, live.map((node) => nodeRow(node, operator)), { id: "nodes" }));
    const away = data.filter((node) => !node.online);
    offline.replaceChildren(away.length === 0 ? "" : el("details", { id: "offline" },
      el("summary", {}, `${away.length} nodes offline`),
      table("Nodes offline", headers, away.map((node) => nodeRow(node, operator)))));
  };
  await refresh();
  const timer = setInterval(() => void refresh(), 5_000);
  signal.addEventListener("abort", () => clearInterval(timer));
}

export async function nodeView(root: HTMLElement, signal: AbortSignal, nodeId: string) {
  const [{ data: node, error }, { data: page }] = await Promise.all([
    api.GET("/v1/nodes/{node_id}", { params: { path: { node_id: nodeId } } }),
    api.GET("/v1/tasks", { params: { query: { node_id: nodeId, limit: 25 } } }),
  ]);
  if (signal.aborted) return;
  if (error || !node) return void root.replaceChildren(el("h2", {}, "Node"), notice(problem(error), "error"));
  root.replaceChildren(
    el("h2", {}, `Node ${node.name} `, node.online ? el("span", { class: "status completed" }, "online") : el("span", { class: "status offline" }, "offline")),
    facts([
      ["Id", el("code", {}, node.node_id)],
      ["Organisation", node.organization_name],
      ["Where", node.location],
      ["Carbon zone", node.zone],
      ["Cell", node.cell],
      ["Embodied emissions", node.embodied_g_co2e == null ? "the grid's default" : co2(node.embodied_g_co2e * 1e9)],
      ["Cores", String(node.cpu_cores)],
      ["Panels", node.has_solar ? "yes" : "no"],
      ["Registered", when(node.registered_at)],
      ["Last seen", lastSeen(node)],
      ["Sun now", watts(node.live?.solar_watts)],
      ["Load now", percent(node.live?.cpu_usage)],
      ["Busy cores", node.live ? `${node.live.claimed} of ${node.cpu_cores}` : "—"],
      ["Trust", `${node.trust} agreeing results in a row`],
      ["Tasks done", String(node.totals.tasks_completed)],
      ["Results that disagreed", String(node.totals.results_disagreed)],
      ["Energy used", energy(node.totals.energy_used_wh)],
      ["Of which sun", energy(node.totals.solar_contribution_wh)],
      ["Credits (70 % share)", exact(`${money(node.totals.credits_peur)} · ${co2(Math.round(node.totals.carbon_saved_kg * 1e9))} avoided`,
        `${node.totals.credits_peur} p€`)],
    ]),
    el("h3", {}, "Its latest tasks"),
    !page || page.tasks.length === 0 ? notice("No task ran here yet.")
      : table(`The latest tasks of ${node.name}`, TASK_HEADERS.filter((header) => header !== "Node"),
        page.tasks.map((task) => taskRow(task, false))),
    el("p", {}, link(href(["tasks"]), "All tasks"), " · ", link(href(["fleet"]), "The fleet"), ` · id ${shortId(node.node_id)}`),
  );
}
