// Tasks: a table of the organisation's tasks (the operator: all), newest first, with filters
// by status, kind and time, a search by id, counts per status, paging by cursor, and live
// updates of the first page.

import { api, problem, type Task } from "../client";
import { button, el, link, notice, table } from "../dom";
import { between, duration, energy, kindName, money, shortId, when } from "../format";
import { subscribe } from "../live";
import { current, href, replaceQuery } from "../router";

export const STATUSES = ["queued", "assigned", "running", "completed", "failed", "cancelled", "rejected", "quarantined"];
type Status = "queued" | "assigned" | "running" | "completed" | "failed" | "cancelled" | "rejected" | "quarantined";
type Kind = "building_thermal_simulation" | "energy_group_optimisation";

export const statusBadge = (status: string) => el("span", { class: `status ${status}` }, status);

export const credit = (task: Task) =>
  task.node_share_peur == null ? "—" : money((task.node_share_peur ?? 0) + (task.cooperative_share_peur ?? 0));

export function taskRow(task: Task, withNode = true): HTMLTableRowElement {
  const ran = between(task.started_at ?? task.assigned_at, task.finished_at);
  const node = task.node_id
    ? link(href(["nodes", task.node_id]), task.node_name ?? shortId(task.node_id))
    : "—";
  const cells: (Node | string)[] = [
    link(href(["tasks", task.task_id]), shortId(task.task_id), { title: task.task_id }),
    kindName(task.kind),
    statusBadge(task.status),
  ];
  if (withNode) cells.push(node);
  cells.push(when(task.submitted_at), when(task.started_at ?? task.assigned_at, false), when(task.finished_at, false),
    duration(ran), energy(task.energy_used_wh), credit(task), task.reason_text ?? "");
  return el("tr", { "data-task": task.task_id }, ...cells.map((cell) => el("td", {}, cell)));
}

export const TASK_HEADERS = ["Task", "Kind", "Status", "Node", "Submitted", "Started", "Finished", "Took", "Energy", "Credit", "Why"];

/** `datetime-local` value ↔ RFC 3339. */
const toInstant = (local: string) => (local ? new Date(local).toISOString() : undefined);
const toLocal = (instant: string | null) => {
  if (!instant) return "";
  const date = new Date(instant);
  return new Date(date.getTime() - date.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
};

export async function tasksView(root: HTMLElement, signal: AbortSignal) {
  const query = current().query;
  const filters = {
    status: query.get("status") ?? "",
    kind: query.get("kind") ?? "",
    since: query.get("since") ?? "",
    until: query.get("until") ?? "",
    q: query.get("q") ?? "",
  };
  const cursors: (string | undefined)[] = [query.get("cursor") ?? undefined];
  const counts = el("div", { id: "task-counts", "aria-live": "polite" });
  const results = el("div", { id: "task-results" });
  const paging = el("div", { class: "paging" });
  const status = el("select", { id: "filter-status", name: "status" },
    el("option", { value: "" }, "every status"), ...STATUSES.map((name) => el("option", { value: name }, name)));
  const kind = el("select", { id: "filter-kind", name: "kind" }, el("option", { value: "" }, "every kind"),
    el("option", { value: "building_thermal_simulation" }, "Thermal simulation"),
    el("option", { value: "energy_group_optimisation" }, "Group optimisation"));
  const since = el("input", { id: "filter-since", type: "datetime-local", name: "since" });
  const until = el("input", { id: "filter-until", type: "datetime-local", name: "until" });
  const search = el("input", { id: "filter-id", type: "search", name: "q", placeholder: "a task id, or its first characters",
    autocomplete: "off", spellcheck: "false" });
  status.value = filters.status;
  kind.value = filters.kind;
  since.value = toLocal(filters.since);
  until.value = toLocal(filters.until);
  search.value = filters.q;
  const form = el("form", { id: "task-filters", class: "filters", role: "search" },
    el("label", {}, "Status ", status), el("label", {}, "Kind ", kind), el("label", {}, "Submitted from ", since),
    el("label", {}, "to ", until), el("label", {}, "Task ", search), el("button", { type: "submit" }, "Show"));
  root.replaceChildren(el("h2", {}, "Tasks"), form, counts, results, paging);

  const load = async () => {
    const cursor = cursors.at(-1);
    const term = filters.q.trim().toLowerCase();
    if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(term)) {
      location.hash = href(["tasks", term]);
      return;
    }
    const common = { kind: (filters.kind || undefined) as Kind | undefined, since: filters.since || undefined, until: filters.until || undefined };
    const [{ data, error }, { data: totals }] = await Promise.all([
      api.GET("/v1/tasks", { params: { query: { ...common, status: (filters.status || undefined) as Status | undefined,
        id_prefix: term || undefined, cursor, limit: 25 } } }),
      api.GET("/v1/tasks/counts", { params: { query: common } }),
    ]);
    if (signal.aborted) return;
    if (totals) {
      counts.replaceChildren(el("ul", { class: "chips", "aria-label": "Tasks by status" },
        el("li", {}, link(href(["tasks"], { ...filters, status: undefined }), `all: ${totals.total}`,
          filters.status ? {} : { "aria-current": "true" })),
        ...STATUSES.filter((name) => (totals.counts[name] ?? 0) > 0).map((name) =>
          el("li", {}, link(href(["tasks"], { ...filters, status: name }), `${name}: ${totals.counts[name]}`,
            filters.status === name ? { "aria-current": "true" } : {})))));
    }
    if (error || !data) return void results.replaceChildren(notice(problem(error), "error"));
    const caption = `Tasks, newest first${filters.status ? `, ${filters.status}` : ""}${cursors.length > 1 ? ` (page ${cursors.length})` : ""}`;
    results.replaceChildren(data.tasks.length === 0
      ? notice("No task matches these filters.")
      : table(caption, TASK_HEADERS, data.tasks.map((task) => taskRow(task)), { id: "tasks" }));
    const newer = button("← Newer", () => { cursors.pop(); replaceQuery({ ...filters, cursor: cursors.at(-1) }); void load(); },
      { id: "page-newer" });
    const older = button("Older →", () => { cursors.push(data.next_cursor ?? undefined); replaceQuery({ ...filters, cursor: cursors.at(-1) }); void load(); },
      { id: "page-older" });
    newer.disabled = cursors.length <= 1;
    older.disabled = !data.next_cursor;
    paging.replaceChildren(newer, older);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    filters.status = status.value;
    filters.kind = kind.value;
    filters.since = toInstant(since.value) ?? "";
    filters.until = toInstant(until.value) ?? "";
    filters.q = search.value;
    cursors.splice(0, cursors.length, undefined);
    replaceQuery({ ...filters });
    void load();
  });
  for (const select of [status, kind]) select.addEventListener("change", () => form.requestSubmit());
  await load();
  let pending = false;
  const unsubscribe = subscribe((event) => {
    if (!event.type.startsWith("Task") || cursors.length > 1 || pending) return;
    pending = true;
    setTimeout(() => { pending = false; if (!signal.aborted) void load(); }, 1_000);
  });
  signal.addEventListener("abort", unsubscribe);
}
