// Stop sequences over streamed text: text is released only once no stop sequence can still begin in it, and
// generation ends at the first stop sequence, which is not part of the answer (as OpenAI's API does).

export interface StopText {
  /** Adds newly decoded text; returns what may be sent now and whether a stop sequence was reached. */
  push(text: string): { emit: string; stopped: boolean };
  /** At the end (no stop sequence met): the text held back. */
  flush(): string;
}

export function createStopText(stops: readonly string[]): StopText {
  const hold = Math.max(0, ...stops.map((s) => s.length - 1));
  let pending = "";
  return {
    push(text) {
      pending += text;
      let first = -1;
      for (const s of stops) {
        const at = pending.indexOf(s);
        if (at >= 0 && (first < 0 || at < first)) first = at;
      }
      if (first >= 0) {
        const emit = pending.slice(0, first);
        pending = "";
        return { emit, stopped: true };
      }
      const cut = Math.max(0, pending.length - hold);
      const emit = pending.slice(0, cut);
      pending = pending.slice(cut);
      return { emit, stopped: false };
    },
    flush() {
      const rest = pending;
      pending = "";
      return rest;
    },
  };
}
