// A watch over live state: the current state of each watched device first, then each change from
// the store's change feed. A consumer that reads slowly gets each device's latest state rather
// than a backlog of every change, so what a watch holds is bounded by the devices it watches.
import { liveStatePages } from "./live-pages.js";
import type { LiveState, LiveStore } from "./live-store.js";

export interface LiveWatchOptions {
  /** The devices to watch; undefined watches the whole fleet, devices first seen later included. */
  readonly deviceIds?: readonly string[] | undefined;
  /** Ends the watch; the generator then returns and unsubscribes. */
  readonly signal: AbortSignal;
}

/**
 * Yields live states until the signal aborts (or the consumer stops iterating), then unsubscribes
 * from the store. Subscribes before reading the current state, so no change in between is missed;
 * a change the current state already covers is not sent again.
 */
export async function* watchLiveState(store: LiveStore, options: LiveWatchOptions): AsyncGenerator<LiveState, void, undefined> {
  const { signal } = options;
  if (signal.aborted) return;
  const watched = options.deviceIds === undefined ? undefined : new Set(options.deviceIds);
  // Changes not yet sent, latest per device; a device keeps its place in line while it waits.
  const pending = new Map<string, LiveState>();
  let wake: (() => void) | undefined;
  const unsubscribe = await store.subscribe((state) => {
    if (watched !== undefined && !watched.has(state.deviceId)) return;
    pending.set(state.deviceId, state);
    wake?.();
  });
  // What each device's last sent state was, to skip changes that are not newer.
  const sent = new Map<string, { observedAtMs: number; lastSeenMs: number }>();
  const isNew = (state: LiveState) => {
    const previous = sent.get(state.deviceId);
    return (
      previous === undefined ||
      state.observedAtMs > previous.observedAtMs ||
      (state.observedAtMs === previous.observedAtMs && state.lastSeenMs > previous.lastSeenMs)
    );
  };
  const markSent = (state: LiveState) => sent.set(state.deviceId, { observedAtMs: state.observedAtMs, lastSeenMs: state.lastSeenMs });

  try {
    for await (const page of liveStatePages(store, options.deviceIds)) {
      for (const state of page) {
        if (signal.aborted) return;
        if (!isNew(state)) continue;
        markSent(state);
        yield state;
      }
    }
    while (!signal.aborted) {
      const next = pending.values().next();
      if (next.done) {
        await new Promise<void>((resolve) => {
          const done = () => {
            wake = undefined;
            signal.removeEventListener("abort", done);
            resolve();
          };
          wake = done;
          signal.addEventListener("abort", done);
        });
        continue;
      }
      const state = next.value;
      pending.delete(state.deviceId);
      if (!isNew(state)) continue;
      markSent(state);
      yield state;
    }
  } finally {
    unsubscribe();
  }
}
