// A watch over live state: the current state of each watched device first, then each change from
// the store's change feed. A consumer that reads slowly gets each device's latest state rather
// than a backlog of every change, so what a watch holds is bounded by the devices it watches.
// Going silent is a change too: a device sent while online is sent again once the inactivity
// timeout has passed with nothing newer, so that the watcher sees it go offline.
import FlatQueue from "flatqueue";
import { liveStatePages } from "./live-pages.js";
import type { LiveState, LiveStore } from "./live-store.js";

export interface LiveWatchOptions {
  /** The devices to watch; undefined watches the whole fleet, devices first seen later included. */
  readonly deviceIds?: readonly string[] | undefined;
  /** Ends the watch; the generator then returns and unsubscribes. */
  readonly signal: AbortSignal;
  /**
   * A device is offline once this long has passed since its last_seen (OFFLINE_AFTER): a device
   * sent while online is sent again when that happens. Unset: nothing is sent for silence.
   */
  readonly offlineAfterMs?: number | undefined;
  /** The clock that judges silence (tests); Date.now by default. */
  readonly now?: () => number;
}

/** What was last sent of a device: enough to tell whether a state is newer. */
interface Sent {
  readonly observedAtMs: number;
  readonly lastSeenMs: number;
  readonly eventId: unknown;
  readonly revision: number;
}

/** The longest delay setTimeout takes (a longer one fires at once, over and over). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Yields live states until the signal aborts (or the consumer stops iterating), then unsubscribes
 * from the store. Subscribes before reading the current state, so no change in between is missed;
 * a change the current state already covers is not sent again. With offlineAfterMs, a device's
 * state is yielded once more when it goes silent (the consumer judges it offline then).
 */
export async function* watchLiveState(store: LiveStore, options: LiveWatchOptions): AsyncGenerator<LiveState, void, undefined> {
  const { signal, offlineAfterMs } = options;
  const now = options.now ?? Date.now;
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
  const sent = new Map<string, Sent>();
  // The stores let a reading with the same observed_at replace the state, so another event at
  // that time is a change too, however its last_seen compares — when the store changed the state
  // after the one sent (a higher revision): a notice of the state it replaced can arrive after a
  // read of the newer one (Redis delivers notices on a connection of their own), and must not
  // turn the watcher back. A store that lost its data counts revisions again, but its states are
  // then seen later (last_seen) or observed later.
  const isNew = (state: LiveState) => {
    const previous = sent.get(state.deviceId);
    return (
      previous === undefined ||
      state.observedAtMs > previous.observedAtMs ||
      (state.observedAtMs === previous.observedAtMs &&
        (state.lastSeenMs > previous.lastSeenMs || (state.values.event_id !== previous.eventId && state.revision > previous.revision)))
    );
  };
  // A newer state of the device is waiting to be sent: an older one must not go out before it.
  const superseded = (state: LiveState) => {
    const waiting = pending.get(state.deviceId);
    return waiting !== undefined && waiting !== state && isNew(waiting) && waiting.observedAtMs >= state.observedAtMs;
  };
  // When devices sent while online go silent, earliest first: one entry per device at most
  // (`scheduled`), however often it reports. A device sent again since its entry was made goes
  // silent later than the entry says, and is put back in line when the entry comes due.
  const silentAt = (lastSeenMs: number) => lastSeenMs + offlineAfterMs! + 1;
  const silences = new FlatQueue<string>();
  const scheduled = new Set<string>();
  const markSent = (state: LiveState) => {
    sent.set(state.deviceId, { observedAtMs: state.observedAtMs, lastSeenMs: state.lastSeenMs, eventId: state.values.event_id, revision: state.revision });
    if (offlineAfterMs === undefined || scheduled.has(state.deviceId)) return;
    const atMs = silentAt(state.lastSeenMs);
    if (atMs <= now()) return;
    silences.push(state.deviceId, atMs);
    scheduled.add(state.deviceId);
  };

  try {
    for await (const page of liveStatePages(store, options.deviceIds)) {
      for (const state of page) {
        if (signal.aborted) return;
        if (!isNew(state) || superseded(state)) continue;
        markSent(state);
        yield state;
      }
    }
    while (!signal.aborted) {
      // Silences come due first: behind a steady stream of changes they would wait for ever.
      const silentAtMs = silences.peekValue();
      if (silentAtMs !== undefined && silentAtMs <= now()) {
        // Read again rather than remembered: the store has the device's latest state, and a
        // whole-fleet watch would otherwise hold every device's.
        const due: string[] = [];
        while ((silences.peekValue() ?? Infinity) <= now()) {
          const deviceId = silences.pop()!;
          scheduled.delete(deviceId);
          // A newer state waiting to be sent says the device is not silent (sending it schedules
          // the device again); a waiting notice that is not newer says nothing.
          const waiting = pending.get(deviceId);
          if (waiting !== undefined && isNew(waiting)) continue;
          const atMs = silentAt(sent.get(deviceId)!.lastSeenMs);
          if (atMs <= now()) due.push(deviceId);
          else {
            silences.push(deviceId, atMs);
            scheduled.add(deviceId);
          }
        }
        for (const state of await store.getLiveState(due)) {
          if (signal.aborted) return;
          if (state === undefined) continue;
          // Reported since it was read (the consumer was slow): its newer state goes out instead.
          if (superseded(state)) continue;
          // Newer after all (a change whose notice is still on its way): sent as a change.
          if (isNew(state)) markSent(state);
          yield state;
        }
        continue;
      }
      const next = pending.values().next();
      if (!next.done) {
        const state = next.value;
        pending.delete(state.deviceId);
        if (!isNew(state)) continue;
        markSent(state);
        yield state;
        continue;
      }
      await new Promise<void>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        const done = () => {
          wake = undefined;
          clearTimeout(timer);
          signal.removeEventListener("abort", done);
          resolve();
        };
        wake = done;
        signal.addEventListener("abort", done);
        if (silentAtMs !== undefined) timer = setTimeout(done, Math.min(MAX_TIMER_MS, Math.max(0, silentAtMs - now())));
      });
    }
  } finally {
    unsubscribe();
  }
}
