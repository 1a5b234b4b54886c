// Reading live state a page at a time: the named devices, or the whole fleet in device_id order.
import type { LiveState, LiveStore } from "./live-store.js";

/** Devices read per store call. */
export const LIVE_PAGE_SIZE = 500;

/** The devices' live state, a page at a time; devices never seen are left out. */
export async function* liveStatePages(store: LiveStore, deviceIds?: readonly string[]): AsyncGenerator<LiveState[]> {
  if (deviceIds !== undefined) {
    for (let i = 0; i < deviceIds.length; i += LIVE_PAGE_SIZE) {
      const states = await store.getLiveState(deviceIds.slice(i, i + LIVE_PAGE_SIZE));
      yield states.filter((s): s is LiveState => s !== undefined);
    }
    return;
  }
  let after: string | undefined;
  for (;;) {
    const ids = await store.listDevices(after, LIVE_PAGE_SIZE);
    if (ids.length === 0) return;
    const states = await store.getLiveState(ids);
    yield states.filter((s): s is LiveState => s !== undefined);
    after = ids.at(-1);
  }
}
