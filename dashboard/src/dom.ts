// Building the page: elements, links, buttons, captioned tables, exact figures behind a click.

export type Child = Node | string | null | undefined | false;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  for (const child of children) if (child) element.append(child);
  return element;
}

export const link = (href: string, text: string, attributes: Record<string, string> = {}) =>
  el("a", { href, ...attributes }, text);

export function button(text: string, onClick: () => void, attributes: Record<string, string> = {}): HTMLButtonElement {
  const element = el("button", { type: "button", ...attributes }, text);
  element.addEventListener("click", onClick);
  return element;
}

/** A captioned table, scrolling sideways on a narrow screen. */
export function table(
  caption: string,
  headers: string[],
  rows: HTMLTableRowElement[],
  attributes: Record<string, string> = {},
): HTMLElement {
  const head = el("tr", {}, ...headers.map((header) => el("th", { scope: "col" }, header)));
  const body = el("tbody", {}, ...rows);
  const element = el("table", attributes, el("caption", {}, caption), el("thead", {}, head), body);
  return el("div", { class: "scroll" }, element);
}

export const row = (cells: Child[], attributes: Record<string, string> = {}) =>
  el("tr", attributes, ...cells.map((cell) => el("td", {}, cell)));

/** A figure as people read it, and the exact integer one click away. */
export const exact = (display: string, exactText: string) =>
  el("details", { class: "exact" }, el("summary", {}, display), el("span", {}, exactText));

/** A definition list of facts. */
export function facts(pairs: [string, Child][]): HTMLDListElement {
  const list = el("dl", { class: "facts" });
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === false) continue;
    list.append(el("dt", {}, term), el("dd", {}, value));
  }
  return list;
}

export const notice = (text: string, kind: "error" | "info" = "info") =>
  el("p", { class: kind, role: kind === "error" ? "alert" : "status" }, text);
