import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compareAlerts, pageOfAlerts, type AlertPosition, type FleetAlertKind } from "./fleet-alerts.js";

const KINDS: readonly FleetAlertKind[] = ["LOW_EFFICIENCY", "BATTERY_CRITICAL", "BATTERY_FALLING", "DEVICE_OFFLINE"];

// Few distinct times and short ids, so ties on time and on kind are common; each (device, kind)
// at most once, as collectFleetAlerts gives them.
const alertsArbitrary = fc
  .uniqueArray(
    fc.record({
      kind: fc.constantFrom(...KINDS),
      deviceId: fc.constantFrom("a", "b", "ab", "b-1", "é", "z", "\u{1F600}", "\uFF21"),
      detectedAtMs: fc.integer({ min: 0, max: 4 }),
    }),
    { selector: (a) => `${a.kind}/${a.deviceId}`, maxLength: 40 },
  )
  .map((alerts) => alerts as AlertPosition[]);

/** What a page is by definition: every alert sorted, those after the cursor, the first `count`. */
function pageBySorting(alerts: readonly AlertPosition[], after: AlertPosition | undefined, count: number) {
  const rest = [...alerts].sort(compareAlerts).filter((a) => after === undefined || compareAlerts(a, after) > 0);
  return { page: rest.slice(0, count), more: rest.length > count };
}

describe("pageOfAlerts", () => {
  it("gives the page a full sort would, and whether more follow, from any cursor", () => {
    fc.assert(
      fc.property(alertsArbitrary, fc.nat({ max: 45 }), fc.integer({ min: 0, max: 12 }), (alerts, cursorAt, count) => {
        const sorted = [...alerts].sort(compareAlerts);
        const after = cursorAt < sorted.length ? sorted[cursorAt] : undefined;
        expect(pageOfAlerts(alerts, after, count)).toEqual(pageBySorting(alerts, after, count));
      }),
      { numRuns: 2_000 },
    );
  });

  it("pages through every alert once, in order, whatever the page size", () => {
    fc.assert(
      fc.property(alertsArbitrary, fc.integer({ min: 1, max: 7 }), (alerts, count) => {
        const seen: AlertPosition[] = [];
        let after: AlertPosition | undefined;
        for (;;) {
          const { page, more } = pageOfAlerts(alerts, after, count);
          seen.push(...page);
          if (!more) break;
          after = page.at(-1);
        }
        expect(seen).toEqual([...alerts].sort(compareAlerts));
      }),
    );
  });
});
