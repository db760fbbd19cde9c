// An address for every view and every task: `#/tasks?status=failed`, `#/tasks/<id>`,
// `#/nodes/<id>`, … Back and Forward move between them, a reload or a sign-in returns to the
// same one.

export interface Route {
  /** The path's parts: `["tasks", "<id>"]`. */
  parts: string[];
  query: URLSearchParams;
}

export function current(): Route {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = hash.split("?", 2);
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(search) };
}

export function href(parts: string[], query?: Record<string, string | undefined>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(query ?? {})) if (value) search.set(name, value);
  const text = search.toString();
  return `#/${parts.map(encodeURIComponent).join("/")}${text ? `?${text}` : ""}`;
}

/** Goes to an address (a new history entry). */
export function go(parts: string[], query?: Record<string, string | undefined>) {
  location.hash = href(parts, query);
}

/** Changes the address's query without a new history entry (a filter being typed). */
export function replaceQuery(query: Record<string, string | undefined>) {
  const route = current();
  history.replaceState(null, "", href(route.parts, query));
}
