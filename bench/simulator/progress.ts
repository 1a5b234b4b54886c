// What the simulator prints: a live progress line (rewritten in place on a terminal, a plain line
// every few seconds otherwise) and the summary at the end. Plain writes, no dependency.

export interface ProgressSnapshot {
  readonly elapsedS: number;
  /** Simulated clock, epoch ms. */
  readonly simulatedAtMs: number;
  readonly phase: "running" | "draining";
  readonly sent: number;
  readonly acknowledged: number;
  readonly duplicates: number;
  readonly rejected: number;
  readonly pending: number;
  readonly retries: number;
  readonly failedCalls: number;
  readonly offline: number;
  readonly devices: number;
}

export interface ProgressOutput {
  write(chunk: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/** Rate of a growing count over a sliding window. */
export class RateMeter {
  private readonly samples: { t: number; value: number }[] = [];

  constructor(private readonly windowMs = 3000) {}

  /** Records the count at time t (ms) and returns the rate per second over the window. */
  update(t: number, value: number): number {
    this.samples.push({ t, value });
    // Keep one sample at or before the window's start, so a slow caller still gets a rate.
    while (this.samples.length > 2 && this.samples[1]!.t <= t - this.windowMs) this.samples.shift();
    const first = this.samples[0]!;
    return t > first.t ? ((value - first.value) * 1000) / (t - first.t) : 0;
  }
}

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export function formatCount(n: number): string {
  return integer.format(n);
}

export function formatProgressLine(s: ProgressSnapshot, ackPerSecond: number): string {
  const sim = new Date(s.simulatedAtMs).toISOString().slice(0, 16).replace("T", " ");
  return [
    `${s.elapsedS.toFixed(1).padStart(6)} s`,
    s.phase === "draining" ? "draining" : `sim ${sim}`,
    `sent ${formatCount(s.sent)}`,
    `ack ${formatCount(s.acknowledged)} (dup ${formatCount(s.duplicates)})`,
    `rejected ${formatCount(s.rejected)}`,
    `pending ${formatCount(s.pending)}`,
    `retries ${formatCount(s.retries)}`,
    `offline ${s.offline}/${s.devices}`,
    `${formatCount(ackPerSecond)} ack/s`,
  ].join("  ");
}

export interface ProgressOptions {
  /** How often the line is rewritten on a terminal, ms. */
  readonly ttyIntervalMs?: number;
  /** How often a line is printed when the output is not a terminal, ms. */
  readonly plainIntervalMs?: number;
  /** Overrides the output's own isTTY. */
  readonly tty?: boolean;
}

export class ProgressReporter {
  private readonly tty: boolean;
  private readonly intervalMs: number;
  private readonly rate = new RateMeter();
  private timer: NodeJS.Timeout | undefined;
  private drawn = false;

  constructor(
    private readonly out: ProgressOutput,
    private readonly snapshot: () => ProgressSnapshot,
    options: ProgressOptions = {},
  ) {
    this.tty = options.tty ?? out.isTTY === true;
    this.intervalMs = this.tty ? (options.ttyIntervalMs ?? 250) : (options.plainIntervalMs ?? 5000);
  }

  start(): void {
    if (this.timer !== undefined) return;
    this.rate.update(performance.now(), this.snapshot().acknowledged);
    this.timer = setInterval(() => this.draw(), this.intervalMs);
    this.timer.unref();
  }

  /** Draws the final state and leaves the cursor on a fresh line. Idempotent. */
  stop(): void {
    if (this.timer === undefined) return;
    clearInterval(this.timer);
    this.timer = undefined;
    this.draw();
    if (this.tty && this.drawn) this.out.write("\n");
  }

  private draw(): void {
    const s = this.snapshot();
    let line = formatProgressLine(s, this.rate.update(performance.now(), s.acknowledged));
    if (this.tty) {
      const width = this.out.columns ?? 0;
      if (width > 1 && line.length > width - 1) line = line.slice(0, width - 1);
      // Back to column 0, the line, then clear what a longer previous line left.
      this.out.write(`\r${line}\x1b[K`);
    } else {
      this.out.write(`${line}\n`);
    }
    this.drawn = true;
  }
}

// ---------------------------------------------------------------------------------------------
// The summary

export interface LinkSummary {
  readonly vehicle: string;
  readonly meter: string | undefined;
  readonly chargerEfficiency: number;
  readonly faultyCharger: boolean;
  /** True when other vehicles charge from the same meter (its AC is theirs too). */
  readonly sharedMeter: boolean;
  /**
   * Σ kwh_delivered_dc / Σ the meter's kwh_consumed_ac over the valid readings generated; null
   * when the vehicle did not charge during the run or it has no meter.
   */
  readonly generatedEfficiency: number | null;
}

export interface SimulationSummary {
  /**
   * Every generated reading was settled (acknowledged, or rejected as not retryable), and every
   * vehicle's meter link registered (unless --no-link).
   */
  readonly ok: boolean;
  readonly target: string;
  readonly transport: string;
  readonly seed: number;
  readonly wallSeconds: number;
  /** True when the run was cut short (Ctrl-C). */
  readonly interrupted: boolean;
  readonly simulated: {
    readonly start: string;
    readonly end: string;
    /** Where the simulated clock got to (the end unless interrupted). */
    readonly reached: string;
    readonly intervalSeconds: number;
    readonly compress: number;
  };
  readonly fleet: {
    readonly meters: number;
    readonly vehicles: number;
    readonly batteries: number;
    readonly offlineProne: readonly string[];
    readonly links: readonly LinkSummary[];
    /** How registering the links with FleetService went; null with --no-link. */
    readonly linksRegistered: { readonly wanted: number; readonly registered: number; readonly failure?: string } | null;
    readonly batteryUnits: readonly { readonly id: string; readonly condition: string; readonly nominalVoltage: number; readonly initialWear: number }[];
  };
  readonly readings: {
    readonly generated: number;
    readonly malformed: number;
    readonly sent: number;
    readonly resent: number;
    readonly acknowledged: number;
    readonly accepted: number;
    readonly duplicates: number;
    readonly rejected: number;
    readonly rejectedByReason: Readonly<Record<string, number>>;
    readonly retryableRejected: number;
    /** Generated and never settled (still in an outbox at the end): 0 in a good run. */
    readonly pending: number;
    /** The largest outbox any device held. */
    readonly maxBacklog: number;
  };
  readonly calls: {
    readonly total: number;
    readonly answered: number;
    readonly failed: Readonly<Record<string, number>>;
    readonly retries: number;
    readonly pushbacks: number;
    readonly lostAnswers: number;
    readonly linkDrops: number;
    readonly maxRetryDelayMs: number;
    readonly inconsistentAnswers: number;
  };
  readonly offline: { readonly outages: number };
  readonly rate: { readonly acknowledgedPerSecond: number; readonly sentPerSecond: number };
}

export function formatSummary(s: SimulationSummary): string {
  const r = s.readings;
  const c = s.calls;
  const f = s.fleet;
  const healthy = f.links.filter((l) => !l.faultyCharger && !l.sharedMeter && l.generatedEfficiency !== null).map((l) => l.generatedEfficiency!);
  const faulty = f.links.filter((l) => l.faultyCharger && !l.sharedMeter && l.generatedEfficiency !== null).map((l) => l.generatedEfficiency!);
  const range = (xs: number[]) => (xs.length === 0 ? "–" : `${pct(Math.min(...xs))}–${pct(Math.max(...xs))}`);
  const conditions = f.batteryUnits.reduce<Record<string, number>>((acc, b) => ({ ...acc, [b.condition]: (acc[b.condition] ?? 0) + 1 }), {});
  const failed = Object.entries(c.failed).map(([code, n]) => `${code} ${formatCount(n)}`).join(", ");
  const reasons = Object.entries(r.rejectedByReason).map(([reason, n]) => `${reason} ${formatCount(n)}`).join(", ");
  const spanH = (Date.parse(s.simulated.reached) - Date.parse(s.simulated.start)) / 3_600_000;
  const linked = f.linksRegistered;
  const unlinked = linked === null ? 0 : linked.wanted - linked.registered;
  const lines = [
    `wattstream simulator: ${r.pending === 0 ? "every reading settled" : `${formatCount(r.pending)} readings NOT acknowledged`}` +
      `${unlinked > 0 ? `; ${plural(unlinked, "meter link")} NOT registered` : ""}${s.interrupted ? " (interrupted)" : ""}`,
    `  target      ${s.target} over ${s.transport}, seed ${s.seed}, ${s.wallSeconds.toFixed(1)} s wall`,
    `  simulated   ${s.simulated.start} → ${s.simulated.reached} (${spanH.toFixed(1)} h at ×${s.simulated.compress}, a reading per device every ${s.simulated.intervalSeconds} s)`,
    `  fleet       ${plural(f.meters, "meter")}, ${plural(f.vehicles, "vehicle")} (${plural(f.links.filter((l) => l.faultyCharger).length, "faulty charger")}), ` +
      `${plural(f.batteries, "battery unit")} (${Object.entries(conditions).map(([k, n]) => `${n} ${k}`).join(", ") || "none"}), ${f.offlineProne.length} offline-prone`,
    `  efficiency  generated DC/AC: healthy chargers ${range(healthy)}, faulty ${range(faulty)}; ` +
      (linked === null ? "meter links not registered (--no-link)" : `meter links registered ${formatCount(linked.registered)} of ${formatCount(linked.wanted)}${linked.failure ? ` (${linked.failure})` : ""}`),
    `  readings    generated ${formatCount(r.generated)}${r.malformed > 0 ? ` (${formatCount(r.malformed)} malformed)` : ""}, sent ${formatCount(r.sent)} (${formatCount(r.resent)} resent)`,
    `              acknowledged ${formatCount(r.acknowledged)} = accepted ${formatCount(r.accepted)} + duplicates ${formatCount(r.duplicates)}; ` +
      `rejected ${formatCount(r.rejected)}${reasons ? ` (${reasons})` : ""}; pending ${formatCount(r.pending)}; largest backlog ${formatCount(r.maxBacklog)}`,
    `  calls       ${formatCount(c.total)}, failed ${failed || "none"}; retries ${formatCount(c.retries)} (pushback honoured ${formatCount(c.pushbacks)}, ` +
      `longest wait ${(c.maxRetryDelayMs / 1000).toFixed(1)} s); lost answers ${formatCount(c.lostAnswers)}; link drops ${formatCount(c.linkDrops)}; outages ${formatCount(s.offline.outages)}`,
    `  rate        ${formatCount(s.rate.acknowledgedPerSecond)} acknowledged readings/s (${formatCount(s.rate.sentPerSecond)} sent/s)`,
  ];
  if (c.inconsistentAnswers > 0) lines.push(`  WARNING     ${c.inconsistentAnswers} answers did not add up (accepted + duplicates ≠ readings settled)`);
  return `${lines.join("\n")}\n`;
}

function plural(n: number, noun: string): string {
  return `${formatCount(n)} ${noun}${n === 1 ? "" : "s"}`;
}

function pct(x: number): string {
  return `${(x * 100).toFixed(1)} %`;
}
