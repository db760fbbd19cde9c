// One task: where it stands and why, its timeline, why it went where it went, its input and
// result, its credits and its proof checked in the browser; cancel it, or submit it again.
// Live: it is drawn again as its events come.

import { api, problem, type Task, type TaskEvent } from "../client";
import { button, el, exact, facts, link, notice, table } from "../dom";
import { between, co2, duration, energy, intensity, kindName, money, percent, shortId, sourceName, watts, when } from "../format";
import { subscribe } from "../live";
import { go, href } from "../router";
import { verifyInclusion } from "../proof";
import { credit, statusBadge } from "./tasks";

interface ScoreInputs {
  node_id: string;
  solar_watts: number;
  cpu_usage: number;
  running: number;
  cpu_cores: number;
  eco_score: number;
}

const OPEN = ["queued", "assigned", "running"];

async function nodeNames(): Promise<Map<string, string>> {
  const { data } = await api.GET("/v1/nodes");
  return new Map((data ?? []).map((node) => [node.node_id, node.name]));
}

// Payloads are read by the event type (the OpenAPI document types the envelope as any JSON).
type Payload = Record<string, any>;

const cellReasons: Record<string, string> = {
  named: "as its submission asked",
  only: "the grid's only cell",
  greenest_with_room: "the greenest cell with room",
  least_loaded: "no cell had room: the least loaded",
  no_summary: "no cell's summary was fresh: the default cell",
};

/** Where a task went: its cell and why (absent before cells). */
function cellSentence(cell: Payload | undefined): string {
  if (!cell?.cell) return "";
  return `, in cell ${cell.cell} (${cellReasons[cell.reason] ?? cell.reason})`;
}

type NodeName = (id: unknown) => string;

/** One credit (of a `TaskCompleted`'s `credits`, or a `CreditsDistributed` event of before). */
function creditSentence(credit: Payload, node: NodeName): string {
  const split = credit.split as Payload;
  const leaf = credit.leaf as Payload | undefined;
  const used = credit.signal as Payload | undefined;
  const at = used ? ` at ${used.zone}'s ${intensity(used.intensity_mg_per_kwh)} (${sourceName(used.source)})` : "";
  return `Credited ${money(split.node_share)} to ${node(credit.node_id)}'s owner and ${money(split.cooperative_share)} to the cooperative fund (70/30), ${co2(split.carbon_saved)} avoided${at}${leaf ? `; leaf ${leaf.leaf_index} of proof block ${leaf.block_height}` : ""}`;
}

/** One archived event of the task, in sentences (none for one a member need not read). */
function sentences(event: TaskEvent, names: Map<string, string>): string[] {
  const payload = (event.envelope as { payload?: Payload }).payload ?? {};
  const node: NodeName = (id) => (typeof id === "string" ? names.get(id) ?? shortId(id) : "its node");
  const text = sentence(event, payload, node);
  // A completion records its credits (since they were folded into it), each a sentence of its own.
  const credits = (event.type === "TaskCompleted" ? (payload.credits as Payload | undefined)?.nodes ?? [] : []) as Payload[];
  return [...(text ? [text] : []), ...credits.map((credit) => creditSentence(credit, node))];
}

/** One archived event of the task, in a sentence (null for one a member need not read). */
function sentence(event: TaskEvent, payload: Payload, node: NodeName): string | null {
  const because = event.reason_text ? `: ${event.reason_text}` : "";
  switch (event.type) {
    case "TaskAccepted":
      return `Submitted and accepted, priority ${payload.priority}${payload.participant_count ? `, ${payload.participant_count} participants` : ""}${cellSentence(payload.cell)}`;
    case "TaskRejected": return `Refused at admission${because}`;
    case "TaskAssigned": return `Assigned to ${node(payload.node_id)} (attempt ${payload.attempt})`;
    case "TaskStarted": return `Started on ${node(payload.node_id)} (attempt ${payload.attempt})`;
    case "TaskRequeued":
      return `Taken back from ${node(payload.node_id)} (attempt ${payload.attempt})${because}; may be placed again after ${duration(payload.retry_after_ms)}`;
    case "TaskResultRecorded":
      return `Result of attempt ${payload.attempt} from ${node(payload.node_id)}: ${payload.results} of ${payload.quorum} agreeing results needed so far; another replica is asked for${because}`;
    case "NodeTrustChanged":
      return `${node(payload.node_id)} ${payload.agreed ? "agreed with the quorum" : "disagreed with the quorum"} (its trust is now ${payload.trust})`;
    case "TaskCompleted": {
      const validation = payload.validation as Payload | undefined;
      const checked = validation?.outcome === "quorum" ? `, ${validation.quorum} results agreeing` : validation?.outcome === "unchecked" ? ", accepted without a replica" : "";
      return `Completed on ${node(payload.node_id)} (attempt ${payload.attempt}${checked}), ${energy(payload.energy_used / 1e6)} used, ${energy(payload.solar_contribution / 1e6)} from the sun${because ? `; not credited${because}` : ""}`;
    }
    case "TaskFailed": return `Failed${because}`;
    case "TaskCancelled": return `Cancelled${because}`;
    case "TaskQuarantined": return `Quarantined: out of scheduling until an operator decides${because}`;
    case "CreditsDistributed": return creditSentence(payload, node);
    case "GreenProofAppended": return `Chained as green-proof link ${payload.seq}`;
    default: return null;
  }
}

function timeline(task: Task, history: TaskEvent[] | null, names: Map<string, string>): HTMLElement {
  if (history) {
    const steps: [string | null, string][] = history.flatMap((event) =>
      sentences(event, names).map((text) => [event.occurred_at, text] as [string, string]));
    steps.push(...waiting(task));
    return el("ol", { class: "timeline", id: "timeline" }, ...steps.map(([at, text]) =>
      el("li", {}, at ? when(at, false) : "", at ? " — " : "", text)));
  }
  return fromRow(task, names);
}

/** What an open task waits for now (the archive tells what happened; this, what is). */
function waiting(task: Task): [string | null, string][] {
  if (task.status !== "queued") return [];
  if (task.not_before && new Date(task.not_before).getTime() > Date.now()) {
    return [[task.not_before, `Waits until then before it may be placed again (${task.reason_text ?? "taken back"})`]];
  }
  if (task.attempts > 0 && task.results.length > 0) return [[null, "Waits for a node of another owner, for another replica of its result"]];
  return [[null, "Queued: waits for a free core, or for a node in the sun while its deadline leaves time (it is then placed on any node, never late)"]];
}

/** The timeline from the task's row, when its history cannot be read. */
function fromRow(task: Task, names: Map<string, string>): HTMLElement {
  const steps: [string | null | undefined, string][] = [[task.submitted_at, `Submitted, priority ${task.priority}`]];
  const reason = task.reason as { code?: string } | null | undefined;
  if (task.status === "queued") {
    if (task.not_before && new Date(task.not_before).getTime() > Date.now()) {
      steps.push([task.not_before, `Waits until then before it may be placed again (${task.reason_text ?? "taken back"})`]);
    } else if (task.attempts > 0 && task.results.length > 0) {
      steps.push([null, "Waits for a node of another owner, for another replica of its result"]);
    } else {
      steps.push([null, "Queued: waits for a free core, or for a node in the sun while its deadline leaves time (it is then placed on any node, never late)"]);
    }
  }
  if (task.assigned_at) {
    const node = task.node_id ? names.get(task.node_id) ?? shortId(task.node_id) : "a node";
    steps.push([task.assigned_at, `Assigned to ${node} (attempt ${task.attempts})`]);
  }
  if (task.started_at) steps.push([task.started_at, "Started on its node"]);
  for (const result of task.results) {
    steps.push([result.reported_at, `Result of attempt ${result.attempt} from ${names.get(result.node_id) ?? shortId(result.node_id)}: ${result.verdict}${result.refusal ? ` (${result.refusal})` : ""}`]);
  }
  if (task.finished_at) {
    const why = task.reason_text ? `: ${task.reason_text}` : "";
    steps.push([task.finished_at, `${task.status[0].toUpperCase()}${task.status.slice(1)}${why}`]);
  }
  if (task.node_share_peur != null) steps.push([task.finished_at, `Credited ${credit(task)} (70 % to the node's owner, 30 % to the cooperative fund)`]);
  if (reason?.code === "quarantined") steps.push([null, "Quarantined: out of scheduling until an operator decides"]);
  return el("ol", { class: "timeline", id: "timeline" }, ...steps.map(([at, text]) =>
    el("li", {}, at ? when(at, false) : "", at ? " — " : "", text)));
}

function why(task: Task, names: Map<string, string>): HTMLElement {
  const assignment = task.assignment as { attempt?: number; chosen?: ScoreInputs; runner_up?: ScoreInputs | null } | null | undefined;
  if (!assignment?.chosen) {
    return notice(task.status === "rejected" ? "Never placed: it was rejected at admission." : "Not placed on a node yet.");
  }
  const describe = (role: string, inputs: ScoreInputs) => el("tr", {},
    el("th", { scope: "row" }, role),
    el("td", {}, link(href(["nodes", inputs.node_id]), names.get(inputs.node_id) ?? shortId(inputs.node_id))),
    el("td", {}, watts(inputs.solar_watts)), el("td", {}, percent(inputs.cpu_usage)),
    el("td", {}, `${inputs.running} of ${inputs.cpu_cores}`), el("td", {}, inputs.eco_score.toFixed(2)));
  const rows = [describe("chosen", assignment.chosen)];
  if (assignment.runner_up) rows.push(describe("runner-up", assignment.runner_up));
  const tableElement = table(`Attempt ${assignment.attempt}: the node chosen, and the next best`,
    ["Role", "Node", "Sun", "Load", "Cores busy", "Eco score"], rows, { id: "assignment" });
  return el("div", {}, tableElement,
    el("p", { class: "hint" }, "Nodes rank by solar surplus once this task runs, then load, then eco score."));
}

function inputOf(task: Task): HTMLElement {
  const input = task.input as Record<string, unknown>;
  if (task.kind === "building_thermal_simulation") {
    return facts([["Building", String(input.building_id ?? "—")], ["Insulation score", String(input.insulation_score ?? "—")],
      ["Surface", `${input.surface_m2 ?? "—"} m²`], ["Heating degree days", String(input.heating_degree_days ?? "—")]]);
  }
  return facts([["Building", String(input.building_id ?? "—")], ["Months simulated", String(input.simulation_months ?? "—")],
    ["Participants", `${input.participants ?? "—"} (their readings are not shown)`]]);
}

/** How each credit was computed: the zone, hour and intensity it used, and where that came
 * from, with the rule that turns them into the figures (so anyone can recompute them). */
function carbon(task: Task, names: Map<string, string>): HTMLElement {
  return el("section", { id: "task-carbon" },
    el("h3", {}, "How the credit was computed"),
    el("p", { class: "hint" }, "CO₂ avoided = the sun's energy × the grid intensity of the node's zone in that hour; "
      + "its value = CO₂ × the price per kg, 70 % to the node's owner, 30 % to the cooperative fund (each step rounds down)."),
    table("Credits and the carbon signal each used", ["Node", "Zone", "Hour (UTC)", "Grid intensity", "Kind", "Source", "Sun", "CO₂ avoided", "Node's share", "Cooperative"],
      task.credits.map((one) => el("tr", {},
        el("td", {}, link(href(["nodes", one.node_id]), names.get(one.node_id) ?? shortId(one.node_id))),
        el("td", {}, one.zone ?? "—"),
        el("td", {}, one.hour ? when(one.hour, false) : "—"),
        el("td", {}, one.intensity_mg_per_kwh == null ? "fixed factor"
          : exact(intensity(one.intensity_mg_per_kwh), `${one.intensity_mg_per_kwh} mg CO₂/kWh`)),
        el("td", {}, one.intensity_kind ?? "average"),
        el("td", {}, sourceName(one.intensity_source)),
        el("td", {}, exact(energy(one.solar_uwh / 1e6), `${one.solar_uwh} µWh`)),
        el("td", {}, exact(co2(one.carbon_saved_ng), `${one.carbon_saved_ng} ng`)),
        el("td", {}, exact(money(one.node_share_peur), `${one.node_share_peur} p€`)),
        el("td", {}, exact(money(one.cooperative_share_peur), `${one.cooperative_share_peur} p€`))))));
}

async function proofs(task: Task, container: HTMLElement, signal: AbortSignal) {
  if (task.status !== "completed" || task.node_share_peur == null) {
    return void container.replaceChildren(notice(task.status === "completed" ? "Completed without credit: no proof." : "No credit yet."));
  }
  for (let attempt = 0; attempt < 40 && !signal.aborted; attempt++) {
    const { data } = await api.GET("/v1/proofs/tasks/{task_id}", { params: { path: { task_id: task.task_id } } });
    const sealed = data?.proofs.filter((proof) => proof.status === "sealed") ?? [];
    if (data && sealed.length > 0 && sealed.length === data.proofs.length) {
      const lines = [];
      for (const proof of data.proofs) {
        const broken = await verifyInclusion(proof);
        lines.push(el("p", { class: broken ? "error" : "verified" }, broken
          ? `The proof of ${shortId(proof.node_id)} does not hold: ${broken}`
          : `Inclusion proof verified in the browser: leaf ${proof.leaf_index} of block ${proof.block_height} (${proof.audit_path.length} hashes)`));
      }
      return void container.replaceChildren(...lines);
    }
    if (data && data.links.length > 0) return void container.replaceChildren(notice(`Chained as ${data.links.length} v1 link(s).`));
    container.replaceChildren(notice("Its proof waits for its block to be sealed (about a second)…"));
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** How long a task not found yet is looked for again: one just submitted (202) appears once
 * the grid applies it, within a second on a healthy grid. */
const LOOK_AGAIN_MS = [250, 500, 1_000, 2_000, 4_000, 8_000];

export async function taskView(root: HTMLElement, signal: AbortSignal, taskId: string) {
  let lookedAgain = 0;
  const draw = async (): Promise<void> => {
    const [{ data: task, error, response }, { data: history }, names] = await Promise.all([
      api.GET("/v1/tasks/{task_id}", { params: { path: { task_id: taskId } } }),
      api.GET("/v1/tasks/{task_id}/events", { params: { path: { task_id: taskId } } }),
      nodeNames(),
    ]);
    if (signal.aborted) return;
    if (response.status === 404 && lookedAgain < LOOK_AGAIN_MS.length) {
      root.replaceChildren(el("h2", {}, "Task"), notice(`No task ${shortId(taskId)} yet: a task just submitted appears once the grid applies it. Looking again…`));
      await new Promise((resolve) => setTimeout(resolve, LOOK_AGAIN_MS[lookedAgain++]));
      return signal.aborted ? undefined : draw();
    }
    if (error || !task) return void root.replaceChildren(el("h2", {}, "Task"), notice(problem(error), "error"));
    const actions = el("div", { class: "actions" });
    const said = el("p", { id: "action-result", role: "status" });
    if (OPEN.includes(task.status)) {
      actions.append(button("Cancel this task", async () => {
        if (!confirm(`Cancel task ${shortId(task.task_id)}? A node running it is told to stop.`)) return;
        const { data, error: refused } = await api.DELETE("/v1/tasks/{task_id}", { params: { path: { task_id: task.task_id } } });
        said.textContent = refused || !data ? problem(refused) : "Cancellation sent; the task is cancelled once the grid applies it.";
      }, { id: "cancel-task", class: "danger" }));
    }
    if (["failed", "cancelled", "quarantined"].includes(task.status)) {
      if (task.kind === "building_thermal_simulation") {
        actions.append(button("Submit it again", async () => {
          const input = task.input as Record<string, unknown>;
          const deadline = new Date(Date.now() + 3_600_000).toISOString();
          const { data, error: refused } = await api.POST("/v1/tasks", { body: {
            copropriete_id: crypto.randomUUID(), priority: task.priority, deadline,
            kind: { type: "building_thermal_simulation", building_id: String(input.building_id),
              insulation_score: Number(input.insulation_score), surface_m2: Number(input.surface_m2),
              heating_degree_days: Number(input.heating_degree_days) } } });
          if (refused || !data) return void (said.textContent = problem(refused));
          go(["tasks", data.task_id]);
        }, { id: "resubmit-task" }));
      } else {
        actions.append(el("p", { class: "hint" }, "A group optimisation is submitted again by its organisation with its participants' readings, which this page never holds."));
      }
    }
    const ran = between(task.started_at ?? task.assigned_at, task.finished_at);
    const result = task.result_json == null ? notice("No result yet.") : el("pre", { id: "result" }, JSON.stringify(task.result_json, null, 2));
    const proofBox = el("div", { id: "proofs", "aria-live": "polite" });
    root.replaceChildren(el("section", { id: "task-detail" },
      el("h2", {}, `Task ${shortId(task.task_id)} `, statusBadge(task.status)),
      el("p", { id: "task-status-line", "aria-live": "polite" }, el("span", { id: "task-status", class: "visually-hidden" }, task.status),
        task.reason_text ? el("strong", { id: "task-reason" }, task.reason_text) : ""),
      actions, said,
      facts([
        ["Id", el("code", {}, task.task_id)],
        ["Kind", kindName(task.kind)],
        ["Priority", String(task.priority)],
        ["Deadline", when(task.deadline)],
        ["Submitted", when(task.submitted_at)],
        ["Attempts", String(task.attempts)],
        ["Cell", task.cell],
        ["Node", task.node_id ? link(href(["nodes", task.node_id]), names.get(task.node_id) ?? shortId(task.node_id)) : "—"],
        ["Took", duration(ran)],
        ["Energy", energy(task.energy_used_wh)],
        ["Sun in it", energy(task.solar_contribution_wh)],
        ["Replicas", `${task.replicas} asked, ${task.quorum} must agree`],
        ["Software carbon intensity", task.sci == null ? "—"
          : exact(`${co2(task.sci.total_ng)} for this task (${co2(task.sci.operational_ng)} operational + ${co2(task.sci.embodied_ng)} embodied)`,
            `SCI = ${task.sci.operational_ng} + ${task.sci.embodied_ng} = ${task.sci.total_ng} ng CO₂e per task`)],
        ["Credit", task.node_share_peur == null ? "—"
          : exact(`${credit(task)} · ${co2(task.carbon_saved_ng)} avoided`,
            `node ${task.node_share_peur} p€ + cooperative ${task.cooperative_share_peur} p€; ${task.carbon_saved_ng} ng CO₂ (node share ${money(task.node_share_peur)})`)],
      ]),
      task.credits.length > 0 ? carbon(task, names) : "",
      el("h3", {}, "Timeline"), timeline(task, history?.events ?? null, names),
      history?.truncated ? notice("Its first 1,000 events are listed.") : "",
      el("h3", {}, "Why it went where it went"), why(task, names),
      el("h3", {}, "Input"), inputOf(task),
      el("h3", {}, "Result"), result,
      task.results.length > 0 ? table("Results and their quorum verdicts", ["Attempt", "Node", "Verdict", "Not credited because", "Reported"],
        task.results.map((one) => el("tr", {}, el("td", {}, String(one.attempt)),
          el("td", {}, link(href(["nodes", one.node_id]), names.get(one.node_id) ?? shortId(one.node_id))),
          el("td", {}, one.verdict), el("td", {}, one.refusal ?? ""), el("td", {}, when(one.reported_at, false))))) : "",
      el("h3", {}, "Green proof"), proofBox,
    ));
    await proofs(task, proofBox, signal);
  };
  await draw();
  let pending = false;
  const unsubscribe = subscribe((event) => {
    if (event.payload.task_id !== taskId || pending) return;
    pending = true;
    setTimeout(() => { pending = false; if (!signal.aborted) void draw(); }, 300);
  });
  signal.addEventListener("abort", unsubscribe);
}
