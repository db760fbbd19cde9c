// Consent: the organisation's data owners and their consent, each owner's history; grant a
// consent, or revoke one (after a confirmation: revoking cancels the owner's tasks and purges
// their readings at once).

import { api, problem } from "../client";
import { button, el, notice, table } from "../dom";
import { when } from "../format";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function waitApplied(commandId: string): Promise<string> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const { data } = await api.GET("/v1/commands/{command_id}", { params: { path: { command_id: commandId } } });
    if (data && data.status !== "pending") return data.status === "applied" ? "applied" : `refused: ${data.reason ?? ""}`;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return "still pending";
}

export async function consentView(root: HTMLElement, signal: AbortSignal, operator: boolean) {
  if (operator) {
    return void root.replaceChildren(el("h2", {}, "Consent"),
      notice("Consent belongs to each member organisation: sign in with its key to see and change it."));
  }
  const history = el("div", { id: "consent-history", "aria-live": "polite" });
  const list = el("div", { id: "owner-list" });
  const said = el("p", { id: "consent-result", role: "status" });
  const owner = el("input", { id: "grant-owner", type: "text", placeholder: "the owner's id (a UUID)", autocomplete: "off", spellcheck: "false" });
  const version = el("input", { id: "grant-version", type: "text", value: "2026-01", autocomplete: "off" });
  const grant = el("form", { id: "grant-form" }, el("label", {}, "Owner ", owner), el("label", {}, "Clause version ", version),
    el("button", { type: "submit" }, "Record their consent"));
  const showHistory = async (ownerId: string) => {
    const { data, error } = await api.GET("/v1/owners/{owner_id}/consent", { params: { path: { owner_id: ownerId } } });
    if (error || !data) return void history.replaceChildren(notice(problem(error), "error"));
    history.replaceChildren(el("h3", {}, `History of ${ownerId}`),
      el("ol", {}, ...data.history.map((change) => el("li", {}, when(change.at), ` ${change.action} (version ${change.consent_version ?? "—"})`))));
  };
  const load = async () => {
    const { data, error } = await api.GET("/v1/owners", { params: { query: { limit: 1000 } } });
    if (signal.aborted) return;
    if (error || !data) return void list.replaceChildren(notice(problem(error), "error"));
    if (data.owners.length === 0) return void list.replaceChildren(notice("No owner has given consent yet."));
    list.replaceChildren(table("Data owners and their consent", ["Owner", "Consent", "Clause version", "Since", "Actions"],
      data.owners.map((one) => {
        const actions = el("td", {}, button("History", () => void showHistory(one.owner_id), { "aria-label": `History of ${one.owner_id}` }));
        if (one.granted) {
          actions.append(" ", button("Revoke", async () => {
            if (!confirm(`Revoke the consent of ${one.owner_id}? Their tasks are cancelled and their readings purged at once.`)) return;
            const { data: accepted, error: refused } = await api.DELETE("/v1/owners/{owner_id}/consent", { params: { path: { owner_id: one.owner_id } } });
            if (refused || !accepted) return void (said.textContent = problem(refused));
            said.textContent = `Revocation ${await waitApplied(accepted.command_id)}.`;
            await load();
            await showHistory(one.owner_id);
          }, { class: "danger", "aria-label": `Revoke the consent of ${one.owner_id}` }));
        }
        return el("tr", { "data-owner": one.owner_id }, el("td", {}, el("code", {}, one.owner_id)),
          el("td", {}, one.granted ? "granted" : "revoked"), el("td", {}, one.consent_version),
          el("td", {}, when((one.granted ? one.granted_at : one.revoked_at) ?? null)), actions);
      }), { id: "owners" }));
  };
  grant.addEventListener("submit", async (event) => {
    event.preventDefault();
    const ownerId = owner.value.trim().toLowerCase();
    if (!UUID.test(ownerId)) return void (said.textContent = "The owner's id is a UUID, like 3f2c…-….");
    if (!confirm(`Record that ${ownerId} consents to clause version ${version.value}? Their readings may then be used.`)) return;
    const { data, error } = await api.PUT("/v1/owners/{owner_id}/consent", { params: { path: { owner_id: ownerId } }, body: { consent_version: version.value } });
    if (error || !data) return void (said.textContent = problem(error));
    said.textContent = `Consent ${await waitApplied(data.command_id)}.`;
    await load();
    await showHistory(ownerId);
  });
  root.replaceChildren(el("h2", {}, "Consent"), grant, said, list, history);
  await load();
}
