// Health (operators): who writes and at which epoch, the standbys ready to take over, the
// backlogs, the dead letters, the gateway's refusals per second, the grid's cells (each with its
// writer, backlog, free cores, sun and carbon intensity now), and the Grafana board.

import { api, problem } from "../client";
import { el, facts, link, notice, row, table } from "../dom";
import { duration, intensity, sourceName, watts, when } from "../format";

const cellStatus = { live: "writing", stale: "no summary for a while: taking over, or no writer", unknown: "no writer has run it yet" } as const;

export async function healthView(root: HTMLElement, signal: AbortSignal) {
  const body = el("div", { id: "health", "aria-live": "polite" });
  root.replaceChildren(el("h2", {}, "Health"), body);
  let previous: { at: number; refusals: number } | null = null;
  const refresh = async () => {
    const [{ data, error }, cells] = await Promise.all([api.GET("/v1/operations"), api.GET("/v1/cells")]);
    if (signal.aborted) return;
    if (error || !data) return void body.replaceChildren(notice(problem(error), "error"));
    const now = Date.now();
    const rate = previous ? ((data.gateway_refusals - previous.refusals) * 1000) / Math.max(1, now - previous.at) : null;
    previous = { at: now, refusals: data.gateway_refusals };
    const standbys = data.orchestrators.filter((one) => one.role === "standby").length;
    body.replaceChildren(
      facts([
        ["Writer", `${data.writer.holder}, epoch ${data.writer.epoch}`],
        ["Writer since", when(data.writer.since)],
        ["Standbys", standbys === 0
          ? el("strong", { class: "error" }, "none: if the writer dies, nothing takes over until an orchestrator starts")
          : `${standbys}, the first takes over within a second if the writer dies`],
        ["Commands waiting", String(data.command_backlog)],
        ["Reports waiting", String(data.report_backlog)],
        ["Dead letters", String(data.dead_letters)],
        ["Refusals of this gateway", rate === null ? `${data.gateway_refusals} so far` : `${rate.toFixed(1)} a second (${data.gateway_refusals} so far)`],
      ]),
      table("Orchestrator processes: the writer holds the lease, the standbys wait for it",
        ["Process", "Role", "Connected since"],
        data.orchestrators.map((one) => row([one.name, one.role, when(one.since)])),
        { id: "orchestrators" }),
      cells.data
        ? table("Cells: each has its own writer, nodes and queue; figures from its writer's summary",
          ["Cell", "Zone", "State", "Writer", "Commands waiting", "Live nodes", "Free cores", "Sun spare", "Queued", "Grid intensity now", "Summary age"],
          cells.data.cells.map((cell) => row([
            cell.default ? `${cell.cell} (default)` : cell.cell,
            cell.zone,
            cellStatus[cell.status],
            `${cell.writer.holder}, epoch ${cell.writer.epoch}`,
            String(cell.backlog.commands),
            String(cell.live_nodes ?? "—"),
            String(cell.free_cores ?? "—"),
            watts(cell.solar_surplus_watts),
            String(cell.queued_tasks ?? "—"),
            cell.intensity ? `${intensity(cell.intensity.mg_per_kwh)} (${sourceName(cell.intensity.source)})` : "—",
            duration(cell.summary_age_ms),
          ])),
          { id: "cells" })
        : notice(problem(cells.error), "error"),
      el("p", {}, link(data.grafana_url, "The Grafana board of these series", { rel: "noopener" })),
    );
  };
  await refresh();
  const timer = setInterval(() => void refresh(), 5_000);
  signal.addEventListener("abort", () => clearInterval(timer));
}
