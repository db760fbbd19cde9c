// Flow: what the grid does now. Tasks accepted, assigned and completed per second over the
// last two minutes (from the live stream, started at its end), the tasks by status (from the
// grid), the latest tasks.

import { api, problem } from "../client";
import { lineChart } from "../charts";
import { el, link, notice, row, table } from "../dom";
import { kindName, shortId, when } from "../format";
import { series, subscribe } from "../live";
import { href } from "../router";
import { statusBadge } from "./tasks";

const LINES = [
  { type: "TaskAccepted", label: "accepted", colour: "#595959" },
  { type: "TaskAssigned", label: "assigned", colour: "#1a5fb4" },
  { type: "TaskCompleted", label: "completed", colour: "#1e6b2a" },
  { type: "TaskFailed", label: "failed", colour: "#a12622" },
];

export async function flowView(root: HTMLElement, signal: AbortSignal) {
  const chart = el("div", { id: "flow-chart" });
  const counts = el("div", { id: "status-counts", "aria-live": "polite" });
  const recent = el("div", { id: "recent" });
  root.replaceChildren(
    el("h2", {}, "Flow"),
    el("p", {}, "What the grid does now: the counts start when this page opened, one point a second."),
    chart,
    el("h3", {}, "Tasks by status"),
    counts,
    el("h3", {}, "Latest tasks"),
    recent,
  );
  const drawChart = () => {
    const { times, counts: perType } = series(LINES.map((line) => line.type), 120);
    chart.replaceChildren(
      lineChart("Tasks per second", "tasks/s", times,
        LINES.map((line) => ({ label: line.label, colour: line.colour, values: perType.get(line.type) ?? [] }))),
    );
  };
  const refresh = async () => {
    const [{ data: totals, error }, { data: page }] = await Promise.all([
      api.GET("/v1/tasks/counts"),
      api.GET("/v1/tasks", { params: { query: { limit: 10 } } }),
    ]);
    if (error || !totals) return void counts.replaceChildren(notice(problem(error), "error"));
    counts.replaceChildren(el("ul", { class: "chips" }, ...Object.entries(totals.counts)
      .filter(([, count]) => count > 0)
      .map(([status, count]) => el("li", {}, link(href(["tasks"], { status }), `${status}: ${count}`)))));
    if (page) {
      recent.replaceChildren(table("The ten latest tasks", ["Task", "Kind", "Status", "Submitted"],
        page.tasks.map((task) => row([link(href(["tasks", task.task_id]), shortId(task.task_id)), kindName(task.kind),
          statusBadge(task.status), when(task.submitted_at)], { "data-task": task.task_id }))));
    }
  };
  drawChart();
  await refresh();
  const ticker = setInterval(drawChart, 1_000);
  let pending = false;
  const unsubscribe = subscribe(() => {
    if (pending) return;
    pending = true;
    setTimeout(() => { pending = false; if (!signal.aborted) void refresh(); }, 1_000);
  });
  signal.addEventListener("abort", () => { clearInterval(ticker); unsubscribe(); });
}
