// When a write of rows to history keeps a device out of the snapshot. The statement's timing
// against writes in progress is what matters here, and a real engine cannot be paused inside a
// statement on demand, so `load` is a promise the test settles; test/performance-snapshot.e2e.test.ts
// runs the same class in the service against the real engine.
import { afterEach, describe, expect, it, vi } from "vitest";
import type { DeviceWindowTotals, FleetDeviceTotals } from "./fleet-efficiency.js";
import { PerformanceSnapshot, type HistoryWriteRow } from "./performance-snapshot.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const END = 1_800_000_000_000 - (1_800_000_000_000 % MINUTE);

const totals = (kwh: number, readings: number): DeviceWindowTotals => ({ kwh, batteryTempSum: 20 * readings, readings });
const fleet = (): FleetDeviceTotals => ({
  meters: new Map([["m1", totals(100, 4)]]),
  vehicles: new Map([
    ["v1", totals(90, 4)],
    ["v2", totals(45, 2)],
  ]),
});
const row = (deviceId: string, observedAtMs: number): HistoryWriteRow => ({ kind: deviceId.startsWith("m") ? "meter" : "vehicle", deviceId, observedAtMs });

/** A snapshot whose reads wait for the test: `loads` lists each read's window and how to settle it. */
function snapshotUnderTest(nowMs = END + 5_000) {
  const loads: { fromMs: number; toMs: number; settle: (totals: FleetDeviceTotals) => Promise<void>; fail: () => Promise<void> }[] = [];
  const clock = { nowMs };
  const devicesRead: string[][] = [];
  const snapshot = new PerformanceSnapshot({
    windowMs: 24 * HOUR,
    now: () => clock.nowMs,
    maxChangedDevices: 2,
    // Changed devices read again: each vehicle among them now has one more reading of 1 kWh.
    loadDevices: (deviceIds) => {
      devicesRead.push([...deviceIds]);
      return Promise.resolve({ meters: new Map(), vehicles: new Map(deviceIds.filter((id) => id.startsWith("v")).map((id) => [id, totals(1, 1)])) });
    },
    load: (fromMs, toMs) =>
      new Promise((resolve, reject) => {
        // Settling resolves the read, then lets the snapshot's own continuation run.
        const turn = () => new Promise<void>((r) => setImmediate(r));
        loads.push({ fromMs, toMs, settle: (t) => (resolve(t), turn()), fail: () => (reject(new Error("engine gone")), turn()) });
      }),
  });
  open = snapshot;
  return { snapshot, loads, clock, devicesRead };
}

/** As snapshotUnderTest, with the window ending at END already read (asked for, then settled). */
async function heldSnapshot(nowMs = END + 5_000) {
  const under = snapshotUnderTest(nowMs);
  under.snapshot.totals("vehicle", "v1", END);
  await under.loads[0]!.settle(fleet());
  return under;
}

/** The snapshot the test made, closed after it. */
let open: PerformanceSnapshot | undefined;
afterEach(() => {
  open?.close();
  vi.useRealTimers();
});

describe("PerformanceSnapshot", () => {
  it("answers nothing until the asked minute's window is read, then every device from it", async () => {
    const { snapshot, loads } = snapshotUnderTest();
    expect(snapshot.totals("vehicle", "v1", END)).toBeUndefined();
    expect(loads.map((l) => [l.fromMs, l.toMs])).toEqual([[END - 24 * HOUR, END]]);
    // A second call while the read runs starts no other.
    expect(snapshot.totals("meter", "m1", END)).toBeUndefined();
    expect(loads).toHaveLength(1);

    await loads[0]!.settle(fleet());
    expect(snapshot.totals("vehicle", "v1", END)).toEqual(totals(90, 4));
    expect(snapshot.totals("meter", "m1", END)).toEqual(totals(100, 4));
    // A device with nothing in the window has nothing, exactly; a meter id is not a vehicle's.
    expect(snapshot.totals("vehicle", "v-silent", END)).toEqual(totals(0, 0));
    expect(snapshot.totals("vehicle", "m1", END)).toEqual(totals(0, 0));
    // Another minute is not this one: it is read, and answered by the statement meanwhile.
    expect(snapshot.totals("vehicle", "v1", END + MINUTE)).toBeUndefined();
    expect(loads.at(-1)?.toMs).toBe(END + MINUTE);
    // An earlier minute, the clock not behind the snapshot's, is neither answered nor read.
    expect(snapshot.totals("vehicle", "v1", END - MINUTE)).toBeUndefined();
    expect(loads).toHaveLength(2);
  });

  it("leaves out a device written to within the window while the snapshot is read or after", async () => {
    const { snapshot, loads } = snapshotUnderTest();
    snapshot.totals("vehicle", "v1", END);
    const during = snapshot.writing([row("v1", END - HOUR)]);
    await loads[0]!.settle(fleet());
    during();
    const after = snapshot.writing([row("m1", END - 23 * HOUR)]);
    after();

    expect(snapshot.totals("vehicle", "v1", END)).toBeUndefined();
    expect(snapshot.totals("meter", "m1", END)).toBeUndefined();
    expect(snapshot.totals("vehicle", "v2", END)).toEqual(totals(45, 2));
  });

  it("leaves out a device whose write was in progress when the read began, and not one whose write had settled", async () => {
    const { snapshot, loads } = snapshotUnderTest();
    const settled = snapshot.writing([row("v2", END - HOUR)]);
    settled();
    const inProgress = snapshot.writing([row("v1", END - HOUR)]);

    snapshot.totals("vehicle", "v1", END);
    await loads[0]!.settle(fleet());
    inProgress();

    expect(snapshot.totals("vehicle", "v1", END)).toBeUndefined();
    expect(snapshot.totals("vehicle", "v2", END)).toEqual(totals(45, 2));
  });

  it("keeps a device whose rows lie outside the window (the current minute, or before it began) or are a battery unit's", async () => {
    const { snapshot } = await heldSnapshot();
    snapshot.writing([row("v1", END), row("v1", END + 30_000), row("v2", END - 24 * HOUR - 1)])();
    // A battery unit's rows change no meter's or vehicle's totals, whatever its id.
    snapshot.writing([{ kind: "battery", deviceId: "v1", observedAtMs: END - HOUR }])();
    expect(snapshot.totals("vehicle", "v1", END)).toEqual(totals(90, 4));
    expect(snapshot.totals("vehicle", "v2", END)).toEqual(totals(45, 2));
    // The window's first and last milliseconds are in it.
    snapshot.writing([row("v1", END - 1), row("v2", END - 24 * HOUR)])();
    expect(snapshot.totals("vehicle", "v1", END)).toBeUndefined();
    expect(snapshot.totals("vehicle", "v2", END)).toBeUndefined();
  });

  it("answers nothing after a failed read, and reads again at the next minute, not at every call", async () => {
    const { snapshot, loads, clock } = snapshotUnderTest();
    snapshot.totals("vehicle", "v1", END);
    await loads[0]!.fail();
    for (let i = 0; i < 5; i++) expect(snapshot.totals("vehicle", "v1", END)).toBeUndefined();
    expect(loads).toHaveLength(1);
    clock.nowMs = END + MINUTE + 1_000;
    expect(snapshot.totals("vehicle", "v1", END + MINUTE)).toBeUndefined();
    expect(loads).toHaveLength(2);
    await loads[1]!.settle(fleet());
    expect(snapshot.totals("vehicle", "v1", END + MINUTE)).toEqual(totals(90, 4));
  });

  it("follows the clock back when it steps behind the snapshot's minute, and not a call racing a minute's start", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const { snapshot, loads, clock } = await heldSnapshot();
    // A call that took the previous minute just before it ended starts no read of it.
    expect(snapshot.totals("vehicle", "v1", END - MINUTE)).toBeUndefined();
    expect(loads).toHaveLength(1);

    // The clock steps back 30 minutes: that minute is read and answered from, and the timer reads
    // the minutes after it.
    clock.nowMs = END - 30 * MINUTE + 5_000;
    expect(snapshot.totals("vehicle", "v1", END - 30 * MINUTE)).toBeUndefined();
    expect(loads.at(-1)?.toMs).toBe(END - 30 * MINUTE);
    await loads.at(-1)!.settle(fleet());
    expect(snapshot.totals("vehicle", "v1", END - 30 * MINUTE)).toEqual(totals(90, 4));
    clock.nowMs = END - 29 * MINUTE;
    vi.advanceTimersByTime(MINUTE);
    expect(loads.at(-1)?.toMs).toBe(END - 29 * MINUTE);
  });

  it("forgets the marks of a minute once the next minute's snapshot is read", async () => {
    const { snapshot, loads } = await heldSnapshot();
    snapshot.writing([row("v1", END - HOUR)])();
    expect(snapshot.totals("vehicle", "v1", END)).toBeUndefined();

    snapshot.totals("vehicle", "v1", END + MINUTE);
    await loads[1]!.settle(fleet());
    expect(snapshot.totals("vehicle", "v1", END + MINUTE)).toEqual(totals(90, 4));
  });

  it("reads the next minute's snapshot as it begins while calls keep asking, and stops when they stop", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const { snapshot, loads, clock } = await heldSnapshot();

    clock.nowMs = END + MINUTE;
    vi.advanceTimersByTime(MINUTE);
    expect(loads.map((l) => l.toMs)).toEqual([END, END + MINUTE]);
    await loads[1]!.settle(fleet());
    expect(snapshot.totals("vehicle", "v1", END + MINUTE)).toEqual(totals(90, 4));

    // Nobody asks again: minutes are read for the keep-warm span (10 minutes) after the last call, then no more.
    for (let minute = 2; minute <= 12; minute++) {
      clock.nowMs = END + minute * MINUTE;
      vi.advanceTimersByTime(MINUTE);
      if (loads.length > minute) await loads[minute]!.settle(fleet());
    }
    expect(loads.at(-1)?.toMs).toBe(END + 11 * MINUTE);
    clock.nowMs = END + 14 * MINUTE;
    vi.advanceTimersByTime(2 * MINUTE);
    expect(loads.at(-1)?.toMs).toBe(END + 11 * MINUTE);
  });

  it("gives the fleet-wide calls every device's totals, reading again by themselves only the devices changed since", async () => {
    const { snapshot, loads, devicesRead } = snapshotUnderTest();
    expect(snapshot.fleetTotals(END - 24 * HOUR, END)).toBeUndefined();
    await loads[0]!.settle(fleet());
    // Another window length is not the snapshot's.
    expect(snapshot.fleetTotals(END - 48 * HOUR, END)).toBeUndefined();
    expect(await snapshot.fleetTotals(END - 24 * HOUR, END)).toEqual(fleet());
    expect(devicesRead).toEqual([]);

    snapshot.writing([row("v1", END - HOUR), row("m1", END - HOUR)])();
    const patched = await snapshot.fleetTotals(END - 24 * HOUR, END);
    expect(devicesRead).toEqual([["v1", "m1"]]);
    // m1 read again has no rows now (the fake says so): it is gone, not kept from the snapshot.
    expect(patched).toEqual({ meters: new Map(), vehicles: new Map([["v1", totals(1, 1)], ["v2", totals(45, 2)]]) });
    // The snapshot itself is untouched for the next call.
    expect(snapshot.totals("vehicle", "v2", END)).toEqual(totals(45, 2));

    // More changed devices than maxChangedDevices (2): the whole window is read by the caller.
    snapshot.writing([row("v2", END - HOUR)])();
    expect(snapshot.fleetTotals(END - 24 * HOUR, END)).toBeUndefined();
  });
});
