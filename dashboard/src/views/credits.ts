// Credits: by node, member and organisation, in the period chosen, with each node's recent
// average (BOINC's RAC), the cooperative fund, the rule in a sentence, and a CSV export.

import { api, problem, type Schemas } from "../client";
import { button, el, exact, notice, row, table } from "../dom";
import { co2, money } from "../format";
import { current, replaceQuery } from "../router";

const PERIODS: [string, string, number | null][] = [
  ["all", "All time", null],
  ["30d", "Last 30 days", 30 * 86_400_000],
  ["7d", "Last 7 days", 7 * 86_400_000],
  ["24h", "Last 24 hours", 86_400_000],
];

function csv(view: Schemas["CreditsView"]): string {
  const quote = (text: string) => `"${text.replace(/"/g, '""')}"`;
  const lines = ["node_id,node,organization_id,organization,credited_results,credits_peur,carbon_saved_ng,recent_average_peur_per_day"];
  for (const node of view.nodes) {
    lines.push([node.node_id, quote(node.node_name), node.organization_id, quote(node.organization_name), node.credited_results,
      node.credits_peur, node.carbon_saved_ng, node.recent_average_peur_per_day].join(","));
  }
  lines.push(`cooperative fund,,,,,${view.cooperative_fund_peur},,`);
  return `${lines.join("\n")}\n`;
}

export async function creditsView(root: HTMLElement, signal: AbortSignal, operator: boolean) {
  const chosen = current().query.get("period") ?? "all";
  const select = el("select", { id: "credit-period" }, ...PERIODS.map(([value, label]) => el("option", { value }, label)));
  select.value = PERIODS.some(([value]) => value === chosen) ? chosen : "all";
  const body = el("div", { id: "credits" });
  root.replaceChildren(
    el("h2", {}, "Credits"),
    el("p", {}, "The rule: each completed task's solar energy is worth the CO₂ it kept off the grid (the grid's intensity, 0.18 kg per kWh unless the grid is set otherwise) at a price per kilogram (€0.025 by default); its node's owner gets 70 % of it, the cooperative fund 30 %, exact to the pico-euro."),
    el("label", {}, "Period ", select),
    body,
  );
  const load = async () => {
    const span = PERIODS.find(([value]) => value === select.value)?.[2] ?? null;
    const since = span ? new Date(Date.now() - span).toISOString() : undefined;
    const { data, error } = await api.GET("/v1/credits", { params: { query: { since } } });
    if (signal.aborted) return;
    if (error || !data) return void body.replaceChildren(notice(problem(error), "error"));
    const total = data.nodes.reduce((sum, node) => sum + node.credits_peur, 0);
    const organisations = new Map<string, { name: string; peur: number; ng: number; results: number }>();
    for (const node of data.nodes) {
      const entry = organisations.get(node.organization_id) ?? { name: node.organization_name, peur: 0, ng: 0, results: 0 };
      entry.peur += node.credits_peur;
      entry.ng += node.carbon_saved_ng;
      entry.results += node.credited_results;
      organisations.set(node.organization_id, entry);
    }
    const download = button("Download as CSV", () => {
      const file = new Blob([csv(data)], { type: "text/csv" });
      const anchor = el("a", { href: URL.createObjectURL(file), download: `koprogo-grid-credits-${select.value}.csv` });
      anchor.click();
      URL.revokeObjectURL(anchor.href);
    }, { id: "credits-csv" });
    body.replaceChildren(
      el("p", { id: "fund" }, "Cooperative fund: ", exact(money(data.cooperative_fund_peur), `${data.cooperative_fund_peur} p€`),
        " · the nodes' owners: ", exact(money(total), `${total} p€`)),
      download,
      data.nodes.length === 0 ? notice("No credit in this period.")
        : table("Credits by node, largest first", ["Node", "Member", "Credited results", "Credit", "CO₂ avoided", "Recent average a day"],
          data.nodes.map((node) => row([node.node_name, node.organization_name, String(node.credited_results),
            exact(money(node.credits_peur), `${node.credits_peur} p€`), exact(co2(node.carbon_saved_ng), `${node.carbon_saved_ng} ng`),
            money(node.recent_average_peur_per_day)])), { id: "credit-nodes" }),
      operator && organisations.size > 0
        ? table("Credits by member organisation", ["Member", "Credited results", "Credit", "CO₂ avoided"],
          [...organisations.values()].sort((a, b) => b.peur - a.peur).map((entry) =>
            row([entry.name, String(entry.results), money(entry.peur), co2(entry.ng)])))
        : "",
      el("p", { class: "hint" }, "The recent average is BOINC's RAC: each credit counts half after a week, a quarter after two, per day."),
    );
  };
  select.addEventListener("change", () => { replaceQuery({ period: select.value }); void load(); });
  await load();
}
