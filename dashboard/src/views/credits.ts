// Credits: by node, member and organisation, in the period chosen, with each node's recent
// average (BOINC's RAC), the cooperative fund, the rule in a sentence, and a CSV export; the
// emissions report (location-based and market-based side by side) by zone, node or member,
// with its CSV export from the API.

import { api, key, problem, type Schemas } from "../client";
import { button, el, exact, notice, row, table } from "../dom";
import { co2, energy, money } from "../format";
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
    el("p", {}, "The rule: each completed task's solar energy is worth the CO₂ it kept off the grid (the intensity of its node's carbon zone in that hour; each task's page shows which and where it came from) at a price per kilogram (€0.025 by default); its node's owner gets 70 % of it, the cooperative fund 30 %, exact to the pico-euro."),
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
  const grouping = el("select", { id: "emissions-group" },
    el("option", { value: "zone" }, "carbon zone"), el("option", { value: "node" }, "node"), el("option", { value: "organisation" }, "member"));
  const report = el("section", { id: "emissions", "aria-live": "polite" });
  const loadReport = async () => {
    const span = PERIODS.find(([value]) => value === select.value)?.[2] ?? null;
    const from = span ? new Date(Date.now() - span).toISOString() : undefined;
    const group_by = grouping.value as "zone" | "node" | "organisation";
    const { data, error } = await api.GET("/v1/reports/emissions", { params: { query: { from, group_by } } });
    if (signal.aborted) return;
    if (error || !data) return void report.replaceChildren(notice(problem(error), "error"));
    const download = button("Download the emissions report (CSV)", async () => {
      const query = new URLSearchParams({ group_by, format: "csv", ...(from ? { from } : {}) });
      const response = await fetch(`/v1/reports/emissions?${query}`, { headers: { Authorization: `Bearer ${key()}` } });
      if (!response.ok) return void report.append(notice(`The export failed: ${response.status}`, "error"));
      const anchor = el("a", { href: URL.createObjectURL(await response.blob()), download: `koprogo-grid-emissions-by-${group_by}-${select.value}.csv` });
      anchor.click();
      URL.revokeObjectURL(anchor.href);
    }, { id: "emissions-csv" });
    const line = (one: Schemas["EmissionsRow"], name: string) => row([name, String(one.results),
      exact(energy(one.energy_uwh / 1e6), `${one.energy_uwh} µWh`), `${one.solar_share_percent} %`,
      exact(co2(one.location_based_ng), `${one.location_based_ng} ng`),
      one.market_based_results === 0 ? "no contract declared"
        : exact(`${co2(one.market_based_ng)} (${one.market_based_results} of ${one.results} results)`, `${one.market_based_ng} ng`),
      exact(co2(one.avoided_ng), `${one.avoided_ng} ng`),
      exact(money(one.node_credits_peur + one.cooperative_credits_peur), `${one.node_credits_peur} + ${one.cooperative_credits_peur} p€`)]);
    report.replaceChildren(
      el("h3", {}, "Emissions"),
      el("p", { class: "hint" }, "Scope 2 of the grid energy the tasks drew (energy − sun): location-based at the intensity of each node's zone and hour, market-based at the factor of the electricity contract its member declared. The two are reported side by side, never netted; the sun's energy is what the credits count as avoided."),
      el("label", {}, "By ", grouping), download,
      data.rows.length === 0 ? notice("No credited result in this period.")
        : table("Emissions of the credited results", ["Group", "Results", "Energy", "Sun's share", "Location-based", "Market-based", "Avoided", "Credits"],
          [...data.rows.map((one) => line(one, one.name)), line(data.totals, "Total")], { id: "emissions-table" }),
    );
  };
  grouping.addEventListener("change", () => void loadReport());
  select.addEventListener("change", () => { replaceQuery({ period: select.value }); void load(); void loadReport(); });
  root.append(report);
  await Promise.all([load(), loadReport()]);
}
