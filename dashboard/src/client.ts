// The public API through the client generated from openapi/openapi.json; the key lives in this
// tab's sessionStorage only, never in a URL.

import createClient from "openapi-fetch";
import type { components, paths } from "./api";

export type Schemas = components["schemas"];
export type Task = Schemas["TaskView"];
export type NodeView = Schemas["NodeView"];
export type TaskEvent = Schemas["TaskEvent"];

export const KEY = "koprogo-grid-key";
export const key = () => sessionStorage.getItem(KEY) ?? "";

export const api = createClient<paths>({ baseUrl: location.origin });
api.use({
  onRequest({ request }) {
    request.headers.set("Authorization", `Bearer ${key()}`);
    return request;
  },
});

/** What a refusal says, for people. */
export function problem(error: unknown): string {
  const problem = error as { detail?: string; title?: string; errors?: { field: string; reason: string }[] } | undefined;
  const fields = problem?.errors?.map((error) => `${error.field}: ${error.reason}`).join("; ");
  return fields || problem?.detail || problem?.title || "the API refused the request";
}
