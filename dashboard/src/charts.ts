// Line charts in SVG, one quantity (one scale) per chart, with a labelled value axis, a time
// axis in local time, a legend beside the plot (never over it) and a text alternative.

import { el } from "./dom";

export interface Line {
  label: string;
  colour: string;
  values: number[];
}

const WIDTH = 640;
const HEIGHT = 150;
const LEFT = 48;
const BOTTOM = 22;
const TOP = 8;
const RIGHT = 8;

const svg = (tag: string, attributes: Record<string, string>, text?: string) => {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (text !== undefined) element.textContent = text;
  return element;
};

const tick = (value: number) => (value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(0) : value.toFixed(1));

const clock = (second: number) =>
  new Date(second * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

/** A chart of `lines` over `times` (unix seconds), in `unit`. */
export function lineChart(title: string, unit: string, times: number[], lines: Line[], id?: string): HTMLElement {
  const top = Math.max(1, ...lines.flatMap((line) => line.values));
  const plotWidth = WIDTH - LEFT - RIGHT;
  const plotHeight = HEIGHT - TOP - BOTTOM;
  const x = (index: number) => LEFT + (index / Math.max(1, times.length - 1)) * plotWidth;
  const y = (value: number) => TOP + plotHeight - (value / top) * plotHeight;
  const totals = lines.map((line) => `${line.label}: latest ${tick(line.values.at(-1) ?? 0)}, highest ${tick(Math.max(0, ...line.values))}`);
  const graphic = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": `${title} (${unit}) over the last ${times.length} points: ${totals.join("; ")}`,
    class: "chart",
  });
  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    graphic.append(
      svg("line", { x1: String(LEFT), x2: String(WIDTH - RIGHT), y1: String(y(value)), y2: String(y(value)), class: "grid" }),
      svg("text", { x: String(LEFT - 6), y: String(y(value) + 4), "text-anchor": "end", class: "axis" }, tick(value)),
    );
  }
  if (times.length > 1) {
    for (const index of [0, Math.floor((times.length - 1) / 2), times.length - 1]) {
      const anchor = index === 0 ? "start" : index === times.length - 1 ? "end" : "middle";
      graphic.append(svg("text", { x: String(x(index)), y: String(HEIGHT - 5), "text-anchor": anchor, class: "axis" }, clock(times[index])));
    }
  }
  for (const line of lines) {
    const points = line.values.map((value, index) => `${x(index).toFixed(1)},${y(value).toFixed(1)}`).join(" ");
    graphic.append(svg("polyline", { points, fill: "none", stroke: line.colour, "stroke-width": "2" }));
  }
  const legend = el("ul", { class: "legend" }, ...lines.map((line) =>
    el("li", {}, el("span", { class: "swatch", "data-colour": line.colour }), `${line.label}: ${tick(line.values.at(-1) ?? 0)} ${unit} now`)));
  for (const swatch of legend.querySelectorAll<HTMLElement>(".swatch")) swatch.style.setProperty("background", swatch.dataset.colour ?? "");
  const attributes: Record<string, string> = { class: "chart-box" };
  if (id) attributes.id = id;
  return el("figure", attributes, el("figcaption", {}, `${title} (${unit})`), graphic, legend);
}
