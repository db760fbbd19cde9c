// Figures as people read them: money in cents or euros, CO₂ in mg, g or kg, watts rounded,
// durations in words, local times with the UTC instant on hover. The exact integers stay one
// click away (see dom.ts `exact`).

const significant = (value: number) =>
  value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value >= 1 ? value.toFixed(2) : value.toPrecision(2);

/** Pico-euros as euros (from one euro) or cents. */
export function money(peur: number | null | undefined): string {
  if (peur === null || peur === undefined) return "—";
  if (peur === 0) return "€0";
  const euros = peur / 1e12;
  if (Math.abs(euros) >= 1) return `€${euros.toFixed(2)}`;
  return `${significant(euros * 100)} ¢`;
}

/** Nanograms of CO₂ in the unit that reads best. */
export function co2(ng: number | null | undefined): string {
  if (ng === null || ng === undefined) return "—";
  if (ng === 0) return "0 g CO₂";
  const units: [number, string][] = [[1e12, "t"], [1e9, "kg"], [1e6, "g"], [1e3, "mg"], [1, "µg"]];
  for (const [scale, unit] of units) {
    if (Math.abs(ng) >= scale) return `${significant(ng / scale)} ${unit} CO₂`;
  }
  return `${significant(ng / 1e3)} µg CO₂`;
}

/** A grid's carbon intensity, from mg CO₂ per kWh (integer) to grams, as people quote it. */
export function intensity(mgPerKwh: number | null | undefined): string {
  if (mgPerKwh === null || mgPerKwh === undefined) return "—";
  return `${(mgPerKwh / 1000).toFixed(mgPerKwh >= 100_000 ? 0 : 1)} g CO₂/kWh`;
}

/** Where an intensity came from, in words. */
export function sourceName(source: string | null | undefined): string {
  if (!source) return "the fixed factor (before carbon signals)";
  if (source === "fixed") return "the grid's fixed factor";
  if (source.startsWith("electricitymaps:")) return `Electricity Maps (${source.split(":")[1]})`;
  if (source.startsWith("watttime:")) return "WattTime (marginal)";
  const file = source.match(/^file:([^:]+):([a-z]+)(\+typical-(\d+))?$/);
  if (file) return `the file ${file[1]} (${file[2]}${file[4] ? `, its ${file[4]} hour as a typical year` : ""})`;
  return source;
}

export const watts = (value: number | null | undefined) => (value === null || value === undefined ? "—" : `${Math.round(value)} W`);

export function energy(wh: number | null | undefined): string {
  if (wh === null || wh === undefined) return "—";
  if (wh === 0) return "0 Wh";
  if (Math.abs(wh) >= 1000) return `${significant(wh / 1000)} kWh`;
  if (Math.abs(wh) >= 1) return `${significant(wh)} Wh`;
  return `${significant(wh * 1000)} mWh`;
}

export const percent = (value: number | null | undefined) => (value === null || value === undefined ? "—" : `${Math.round(value)} %`);

export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export const between = (from: string | null | undefined, to: string | null | undefined) =>
  from && to ? new Date(to).getTime() - new Date(from).getTime() : null;

export function relative(iso: string, now = Date.now()): string {
  const delta = new Date(iso).getTime() - now;
  const words = duration(Math.abs(delta)).replace(/ \d+ (s|min|h)$/, "");
  if (Math.abs(delta) < 1500) return "just now";
  return delta < 0 ? `${words} ago` : `in ${words}`;
}

const sameDay = (a: Date, b: Date) => a.toDateString() === b.toDateString();

/** A `<time>`: local time (and date when not today), relative in words, UTC on hover. */
export function when(iso: string | null | undefined, withRelative = true): HTMLElement | string {
  if (!iso) return "—";
  const date = new Date(iso);
  const local = sameDay(date, new Date())
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : date.toLocaleString([], { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
  const element = document.createElement("time");
  element.dateTime = iso;
  element.title = `${date.toISOString()} (UTC)`;
  element.textContent = withRelative ? `${local} (${relative(iso)})` : local;
  return element;
}

export const shortId = (id: string) => id.slice(0, 8);

export const KIND_NAMES: Record<string, string> = {
  building_thermal_simulation: "Thermal simulation",
  energy_group_optimisation: "Group optimisation",
};

export const kindName = (kind: string) => KIND_NAMES[kind] ?? kind;
