// The grid's dashboard. It reads the public API only, through a client generated from
// openapi/openapi.json (`npm run generate`: openapi-typescript, then openapi-fetch), and follows
// GET /v1/events (server-sent events from the stream's end, resumed with Last-Event-ID) for
// live updates. Every view and every task has an address (`#/tasks/<id>`), kept through a
// reload and a sign-in. The key is kept in this tab's sessionStorage, never in a URL.

import { KEY, api, problem } from "./client";
import { el } from "./dom";
import { follow } from "./live";
import { current, go } from "./router";
import { consentView } from "./views/consent";
import { creditsView } from "./views/credits";
import { fleetView, nodeView } from "./views/fleet";
import { flowView } from "./views/flow";
import { healthView } from "./views/health";
import { proofsView } from "./views/proofs";
import { taskView } from "./views/task";
import { tasksView } from "./views/tasks";

const $ = <T extends HTMLElement>(selector: string) => document.querySelector(selector) as T;

let operator = false;
let running: AbortController | null = null;

/** Draws the view of the current address. */
async function route() {
  if ($("#app").hidden) return;
  running?.abort();
  const controller = new AbortController();
  running = controller;
  const root = $("#view");
  const { parts } = current();
  const [view = "flow", id] = parts;
  for (const link of document.querySelectorAll<HTMLAnchorElement>("nav a[data-view]")) {
    if (link.dataset.view === view || (view === "nodes" && link.dataset.view === "fleet")) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  root.replaceChildren(el("p", { role: "status" }, "Loading…"));
  const signal = controller.signal;
  try {
    switch (view) {
      case "tasks": await (id ? taskView(root, signal, id) : tasksView(root, signal)); break;
      case "fleet": await fleetView(root, signal, operator); break;
      case "nodes": await (id ? nodeView(root, signal, id) : fleetView(root, signal, operator)); break;
      case "credits": await creditsView(root, signal, operator); break;
      case "proofs": await proofsView(root, signal); break;
      case "consent": await consentView(root, signal, operator); break;
      case "health": await healthView(root, signal); break;
      default: await flowView(root, signal);
    }
  } catch (error) {
    if (!signal.aborted) root.replaceChildren(el("p", { class: "error", role: "alert" }, `This view failed: ${String(error)}`));
  }
  if (!signal.aborted) document.title = `${root.querySelector("h2")?.textContent ?? "Dashboard"} · KoproGo Grid`;
}

async function signIn(key: string) {
  sessionStorage.setItem(KEY, key);
  const { error } = await api.GET("/v1/stats");
  if (error) {
    sessionStorage.removeItem(KEY);
    $("#sign-in-error").textContent = problem(error);
    return;
  }
  const { response } = await api.GET("/v1/operations");
  operator = response.ok;
  $<HTMLElement>("#nav-health").hidden = !operator;
  $("#who").textContent = operator ? "operator" : "member organisation";
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  void follow();
  if (!location.hash) go(["flow"]);
  else void route();
  $<HTMLElement>("#view").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    void signIn(($("#key") as HTMLInputElement).value.trim());
  });
  $("#sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.reload();
  });
  window.addEventListener("hashchange", () => void route());
  const saved = sessionStorage.getItem(KEY);
  if (saved) void signIn(saved);
  else $<HTMLInputElement>("#key").focus();
});
