// Reading live state a page at a time (the named devices, or the whole fleet in device_id order),
// or surveying the whole fleet at once.
import type { FleetSurvey, LiveState, LiveStore, SurveyOptions } from "./live-store.js";

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

/** Device ids listed per store call when surveying the whole fleet. */
const FLEET_IDS_PER_CALL = 10_000;

/** The whole fleet's survey (see FleetSurvey), its attention list in device id order. */
export async function surveyFleet(live: LiveStore, onlineSinceMs: number, options?: SurveyOptions): Promise<FleetSurvey> {
  // The ids first, then one survey of them all, which the store serves in parallel (Redis: a
  // script call per thousand devices, four in flight). Reading every device's whole state instead
  // took 191–239 ms for 20,000 devices in Redis during the fleet calls.
  const ids: string[] = [];
  for (let page = await live.listDevices(undefined, FLEET_IDS_PER_CALL); page.length > 0; page = await live.listDevices(page.at(-1), FLEET_IDS_PER_CALL)) {
    ids.push(...page);
  }
  return live.surveyDevices(ids, onlineSinceMs, options);
}
