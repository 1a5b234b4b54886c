// GetVehiclePerformance's default window — the 24 h ending at the last whole minute — read for
// every meter and vehicle at once, once a minute, so that most calls run no statement at all. The
// embedded engine spends 5–10 ms of fixed work on any statement (parsing, analysis, planning)
// however little it reads, which is the whole of one vehicle's answer; the fleet-wide statement
// that reads every device's window (fleet-efficiency.ts) costs about as much as four of them.
//
// Exact, not merely recent: a device is answered from the snapshot only while nothing written
// since its statement began can change the device's window. Every write of rows to history is
// announced before it starts (`writing`) and withdrawn once every attempt to store it has settled.
// A write in progress when a snapshot's statement begins, or begun after, marks the devices of its
// rows observed within that snapshot's window as changed, whether it lands or not; their calls go
// to the statement until the next minute's snapshot. A write withdrawn before the statement began
// has landed (or never will), and the statement sees it.
//
// GetFleetSummary and ListAlerts read the same window for every device; they take the snapshot
// too, with the few devices changed since read again by themselves (fleetTotals).
//
// That holds only where this process writes all history: with the embedded engine, whose data
// directory is locked to one process. Against a ClickHouse server that other processes write to,
// their rows would not mark anything, so the service leaves the snapshot off there
// (PERFORMANCE_SNAPSHOT).
import type { Logger } from "pino";
import type { DeviceKind } from "../process/history-rows.js";
import type { DeviceWindowTotals, FleetDeviceTotals } from "./fleet-efficiency.js";

const MINUTE_MS = 60_000;

/** A row on its way to history, as the ingest path holds it. */
export interface HistoryWriteRow {
  readonly kind: DeviceKind;
  readonly deviceId: string;
  readonly observedAtMs: number;
}

/** Told of every write of rows to history: before it starts, and (by calling the function returned) once every attempt has settled. */
export interface HistoryWriteListener {
  writing(rows: readonly HistoryWriteRow[]): () => void;
}

export type DeviceSide = "meter" | "vehicle";

export interface PerformanceSnapshotOptions {
  /** The window's length, in ms (GetVehiclePerformance's default). */
  readonly windowMs: number;
  /** Reads every device's totals over [fromMs, toMs). */
  readonly load: (fromMs: number, toMs: number) => Promise<FleetDeviceTotals>;
  /** Reads the named devices' totals over [fromMs, toMs) (those changed since the snapshot, for the fleet-wide calls). */
  readonly loadDevices: (deviceIds: readonly string[], fromMs: number, toMs: number) => Promise<FleetDeviceTotals>;
  /** Most changed devices read again by themselves for a fleet-wide call; with more, the whole window is read. */
  readonly maxChangedDevices?: number;
  /**
   * While the snapshot was asked for within this long, the next minute's is read as that minute
   * begins rather than by its first call, which would go to the statement meanwhile; in ms.
   */
  readonly keepWarmMs?: number;
  readonly now?: () => number;
  readonly log?: Pick<Logger, "warn">;
}

/** A window being read: the meters and vehicles written to within it since its statement began (one set for both sides). */
interface PendingSnapshot {
  readonly fromMs: number;
  readonly toMs: number;
  readonly changed: Set<string>;
}

/** A window read, its marks still growing as writes come. */
interface Snapshot extends PendingSnapshot {
  readonly totals: FleetDeviceTotals;
}

const NO_READINGS: DeviceWindowTotals = { kwh: 0, batteryTempSum: 0, readings: 0 };
const DEFAULT_KEEP_WARM_MS = 10 * MINUTE_MS;
const DEFAULT_MAX_CHANGED_DEVICES = 2_000;

export class PerformanceSnapshot implements HistoryWriteListener {
  private readonly windowMs: number;
  private readonly keepWarmMs: number;
  private readonly now: () => number;
  /** Writes announced and not yet settled. */
  private readonly writes = new Set<{ readonly rows: readonly HistoryWriteRow[] }>();
  /** The snapshot calls are answered from. */
  private current: Snapshot | undefined;
  /** The snapshot being read, at most one at a time. */
  private next: PendingSnapshot | undefined;
  private lastAskedMs = -Infinity;
  /** The window end of the last read that failed. */
  private failedToMs: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: PerformanceSnapshotOptions) {
    this.windowMs = options.windowMs;
    this.keepWarmMs = options.keepWarmMs ?? DEFAULT_KEEP_WARM_MS;
    this.now = options.now ?? Date.now;
  }

  writing(rows: readonly HistoryWriteRow[]): () => void {
    const write = { rows };
    this.writes.add(write);
    markChanged(this.current, rows);
    markChanged(this.next, rows);
    return () => this.writes.delete(write);
  }

  /**
   * A device's totals over the window ending at `toMs` (a whole minute), or undefined when the
   * snapshot cannot answer them exactly: it is of another minute (the current one is then read),
   * still being read, or the device was written to since.
   */
  totals(side: DeviceSide, deviceId: string, toMs: number): DeviceWindowTotals | undefined {
    const snapshot = this.held(toMs);
    if (snapshot === undefined || snapshot.changed.has(deviceId)) return undefined;
    return (side === "meter" ? snapshot.totals.meters : snapshot.totals.vehicles).get(deviceId) ?? NO_READINGS;
  }

  /**
   * Every device's totals over [fromMs, toMs) for GetFleetSummary and ListAlerts, when that is the
   * snapshot's window: its totals, with the devices changed since read again by themselves.
   * Undefined when the snapshot does not hold the window (as for `totals`), or when so many devices
   * changed that reading the whole window again costs less.
   */
  fleetTotals(fromMs: number, toMs: number): Promise<FleetDeviceTotals> | undefined {
    if (toMs - fromMs !== this.windowMs) return undefined;
    const snapshot = this.held(toMs);
    if (snapshot === undefined) return undefined;
    const { totals } = snapshot;
    if (snapshot.changed.size === 0) return Promise.resolve(totals);
    if (snapshot.changed.size > (this.options.maxChangedDevices ?? DEFAULT_MAX_CHANGED_DEVICES)) return undefined;
    const changed = [...snapshot.changed];
    return this.options.loadDevices(changed, fromMs, toMs).then((fresh) => {
      const meters = new Map(totals.meters);
      const vehicles = new Map(totals.vehicles);
      for (const id of changed) {
        meters.delete(id);
        vehicles.delete(id);
      }
      for (const [id, t] of fresh.meters) meters.set(id, t);
      for (const [id, t] of fresh.vehicles) vehicles.set(id, t);
      return { meters, vehicles };
    });
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }

  /** The snapshot of the window ending at `toMs` if it is ready; else starts reading it (a later minute only). */
  private held(toMs: number): Snapshot | undefined {
    this.lastAskedMs = this.now();
    const snapshot = this.current;
    if (snapshot?.toMs !== toMs) {
      this.read(toMs);
      return undefined;
    }
    this.keepWarm();
    return snapshot;
  }

  /**
   * Whether a snapshot of the window ending at `toMs` would be kept: one of a later minute than the
   * current one, or of any minute once the clock has stepped back behind the current one — but not
   * a minute whose read failed (tried again at the next minute, not by every call).
   */
  private wanted(toMs: number): boolean {
    if (toMs === this.failedToMs) return false;
    const current = this.current;
    return current === undefined || toMs > current.toMs || current.toMs > this.clockMinute();
  }

  /** Starts reading the window ending at `toMs`, unless a read is under way or it would not be kept. */
  private read(toMs: number): void {
    if (this.closed || this.next !== undefined || !this.wanted(toMs)) return;
    const next: PendingSnapshot = { fromMs: toMs - this.windowMs, toMs, changed: new Set() };
    this.next = next;
    // Writes in progress may land while the statement runs, or just after it has read their table.
    for (const write of this.writes) markChanged(next, write.rows);
    this.options.load(next.fromMs, toMs).then(
      (totals) => {
        this.next = undefined;
        if (!this.wanted(toMs)) return;
        // The same set of marks: a write announced while the statement ran stays marked.
        this.current = { ...next, totals };
        this.keepWarm();
      },
      (error: unknown) => {
        this.next = undefined;
        // Closing the service ends the statement too; that is no news.
        if (this.closed) return;
        this.failedToMs = toMs;
        this.options.log?.warn({ err: error }, "could not read the fleet's performance window; calls read their own until the next minute");
      },
    );
  }

  private clockMinute(): number {
    return Math.floor(this.now() / MINUTE_MS) * MINUTE_MS;
  }

  /** Reads the next minute's snapshot as it begins, while calls keep asking. */
  private keepWarm(): void {
    if (this.timer !== undefined || this.closed) return;
    const nowMs = this.now();
    const nextMinuteMs = Math.floor(nowMs / MINUTE_MS) * MINUTE_MS + MINUTE_MS;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.now() - this.lastAskedMs > this.keepWarmMs) return;
      this.read(this.clockMinute());
    }, nextMinuteMs - nowMs);
    this.timer.unref();
  }
}

/** Marks the meters and vehicles of rows observed within the snapshot's window as changed (battery units are not in it). */
function markChanged(snapshot: PendingSnapshot | undefined, rows: readonly HistoryWriteRow[]): void {
  if (snapshot === undefined) return;
  const { fromMs, toMs, changed } = snapshot;
  for (const row of rows) {
    if (row.kind !== "battery" && row.observedAtMs >= fromMs && row.observedAtMs < toMs) changed.add(row.deviceId);
  }
}
