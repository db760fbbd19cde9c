// The live event stream: GET /v1/events as server-sent events (through fetch: EventSource
// cannot send a key), started at the stream's end (`tail=true`: counts are of what happens
// now, never the archive replayed as now), resumed with Last-Event-ID after a drop.

import { key } from "./client";

export interface GridEvent {
  seq: number;
  type: string;
  payload: Record<string, unknown>;
  at: number;
}

type Listener = (event: GridEvent) => void;

const listeners = new Set<Listener>();
/** Events per second and type, for the last few minutes. */
const perSecond = new Map<number, Map<string, number>>();
let lastId = "";
let started = false;

export function subscribe(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** The count of each type per second over the last `seconds` seconds, oldest first. */
export function series(types: string[], seconds: number): { times: number[]; counts: Map<string, number[]> } {
  const now = Math.floor(Date.now() / 1000);
  const times = Array.from({ length: seconds }, (_, at) => now - seconds + 1 + at);
  const counts = new Map(types.map((type) => [type, times.map((second) => perSecond.get(second)?.get(type) ?? 0)]));
  return { times, counts };
}

function received(event: GridEvent) {
  const second = Math.floor(event.at / 1000);
  const counts = perSecond.get(second) ?? new Map<string, number>();
  counts.set(event.type, (counts.get(event.type) ?? 0) + 1);
  perSecond.set(second, counts);
  for (const old of perSecond.keys()) if (old < second - 600) perSecond.delete(old);
  for (const listener of listeners) listener(event);
}

function setState(text: string, live: boolean) {
  const badge = document.getElementById("live");
  if (!badge) return;
  badge.textContent = text;
  badge.classList.toggle("on", live);
}

/** Follows the stream until the page goes; safe to call more than once. */
export async function follow() {
  if (started) return;
  started = true;
  for (;;) {
    try {
      const headers: Record<string, string> = { Accept: "text/event-stream", Authorization: `Bearer ${key()}` };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch(lastId ? "/v1/events" : "/v1/events?tail=true", { headers });
      if (!response.ok || !response.body) throw new Error(`events answered ${response.status}`);
      setState("live", true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let id = "";
          let data = "";
          let type = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
            else if (line.startsWith("event:")) type = line.slice(6).trim();
          }
          if (!data) continue;
          lastId = id || lastId;
          const envelope = JSON.parse(data);
          received({ seq: parseInt(id, 10), type: type || envelope.type, payload: envelope.payload ?? {}, at: Date.now() });
        }
      }
    } catch (error) {
      console.warn(error);
    }
    setState("reconnecting…", false);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
}
