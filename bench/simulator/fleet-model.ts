// Seeded models of an energy fleet: smart meters, EVs charging from them, battery backup units.
// Pure: no I/O, no clock, no Math.random. The same options give the same readings, however the
// caller slices simulated time into advanceTo() calls, because every device draws from its own
// random streams in the order of its own reading steps.
//
// Physics is simple and documented in docs/simulator.md. What matters is that the numbers behave
// the way the service's answers expect: a vehicle's DC energy and its meter's AC energy give the
// charger's efficiency, and an ageing backup unit's voltage, temperature and error codes drive the
// battery scorer (docs/scoring.md) into WARN and CRITICAL.

export type DeviceKind = "meter" | "vehicle" | "battery";

/** A uniform random number in [0, 1). */
export type Random = () => number;

export interface FleetOptions {
  /** Seed for every random choice; the same seed and options give the same fleet and readings. */
  readonly seed: number;
  readonly meters: number;
  readonly vehicles: number;
  readonly batteries: number;
  /** Simulated time between two readings of one device, ms. */
  readonly intervalMs: number;
  /** Simulated start, epoch ms: the first reading is observed at startMs + intervalMs. */
  readonly startMs: number;
  /** Simulated end, epoch ms (inclusive): no reading is generated after it. */
  readonly endMs: number;
  /** Share of vehicles whose charger is faulty (below 85 % efficient). */
  readonly faultyShare?: number;
  /** Share of all devices that go offline now and then during the run. */
  readonly offlineShare?: number;
  /** Share of readings corrupted on purpose, so the service rejects them. */
  readonly malformedShare?: number;
  /** Share of battery units that age visibly: about half worn (WARN), half failing (CRITICAL). */
  readonly agingShare?: number;
  /** Prefix of every device id. */
  readonly prefix?: string;
}

export const FLEET_DEFAULTS = {
  faultyShare: 0.1,
  offlineShare: 0.1,
  malformedShare: 0,
  agingShare: 0.3,
  prefix: "sim",
} as const;

export interface MeterValues {
  readonly kind: "meter";
  /** AC energy since the previous reading, kWh. */
  readonly kwhConsumedAc: number;
  /** RMS supply voltage, V. */
  readonly voltage: number;
  /** Cumulative AC register, kWh (only meters that have one). */
  readonly registerKwhAc?: number;
}

export interface VehicleValues {
  readonly kind: "vehicle";
  /** State of charge, %. */
  readonly soc: number;
  /** DC energy into the battery since the previous reading, kWh. */
  readonly kwhDeliveredDc: number;
  /** Traction battery temperature, °C. */
  readonly batteryTemp: number;
  /** Cumulative DC register, kWh (only vehicles that have one). */
  readonly registerKwhDc?: number;
}

export interface BatteryValues {
  readonly kind: "battery";
  /** Pack terminal voltage, V. */
  readonly voltage: number;
  /** Pack temperature, °C. */
  readonly temperature: number;
  /** Active vendor error codes. */
  readonly errorCodes: readonly string[];
}

export type SampleValues = MeterValues | VehicleValues | BatteryValues;

/** What a corrupted reading got wrong; each one is a reading the service must reject. */
export type MalformedKind =
  | "voltage-in-millivolts"
  | "negative-energy"
  | "nan-voltage"
  | "soc-over-100"
  | "temperature-in-kelvin"
  | "nan-energy"
  | "empty-error-code"
  | "clock-a-day-ahead"
  | "missing-observed-at";

export interface SimReading {
  /** Index of the device in FleetModel.devices. */
  readonly deviceIndex: number;
  readonly deviceId: string;
  /** Unique per device, the same on every resend: the device's step time and sequence number. */
  readonly eventId: string;
  /** When the device says it observed the reading, epoch ms; undefined if it left the field out. */
  readonly observedAtMs: number | undefined;
  readonly sample: SampleValues;
  /** Set when the reading was corrupted on purpose. */
  readonly malformed?: MalformedKind;
}

export interface TimeWindow {
  readonly fromMs: number;
  readonly toMs: number;
}

interface DeviceBase {
  /** Position in FleetModel.devices (meters first, then vehicles, then battery units). */
  readonly index: number;
  readonly id: string;
  /** When the device is offline (simulated time), oldest first; empty for most devices. */
  readonly offline: readonly TimeWindow[];
}

export interface MeterInfo extends DeviceBase {
  readonly kind: "meter";
  /** "charge-point": a vehicle charges from it (little else on it); "household": a home's load. */
  readonly role: "charge-point" | "household";
  /** The vehicles that charge from this meter. */
  readonly vehicleIds: readonly string[];
}

export interface VehicleInfo extends DeviceBase {
  readonly kind: "vehicle";
  /** The meter this vehicle charges from; undefined when the fleet has no meters. */
  readonly meterId: string | undefined;
  /** AC → DC efficiency of its charger, a fraction. */
  readonly chargerEfficiency: number;
  /** True when the charger is below 85 % efficient. */
  readonly faultyCharger: boolean;
  /** The charger's AC power, kW. */
  readonly chargerKw: number;
  /** Usable battery capacity, kWh. */
  readonly capacityKwh: number;
}

export type BatteryCondition = "healthy" | "worn" | "failing";

export interface BatteryInfo extends DeviceBase {
  readonly kind: "battery";
  readonly condition: BatteryCondition;
  /** Nominal pack voltage, V. */
  readonly nominalVoltage: number;
  /** Wear at the start, 0 (new) to 1 (dead). */
  readonly initialWear: number;
}

export type DeviceInfo = MeterInfo | VehicleInfo | BatteryInfo;

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
/** Physics advances in steps of at most this much, whatever the reading interval. */
const MAX_SUBSTEP_MS = MINUTE;

/** Healthy chargers' efficiency range; with the small base load the measured 24 h ratio is 0.88–0.94. */
export const HEALTHY_CHARGER_EFFICIENCY = { min: 0.9, max: 0.94 } as const;
/** Faulty chargers' efficiency range: all below the service's 0.85 alert threshold. */
export const FAULTY_CHARGER_EFFICIENCY = { min: 0.72, max: 0.82 } as const;

export class FleetModel {
  readonly devices: readonly DeviceInfo[];
  readonly options: Required<FleetOptions>;
  private readonly meters: MeterSim[] = [];
  private readonly vehicles: VehicleSim[] = [];
  private readonly batteries: BatterySim[] = [];
  /** Readings generated so far per device: the next sequence number. */
  private readonly sequence: number[];
  private readonly malform: Random[];
  private step = 0;

  constructor(options: FleetOptions) {
    const o = { ...FLEET_DEFAULTS, ...options };
    this.options = o;
    for (const [name, value] of Object.entries({ meters: o.meters, vehicles: o.vehicles, batteries: o.batteries })) {
      if (!Number.isInteger(value) || value < 0) throw new RangeError(`${name} must be a whole number ≥ 0, got ${value}`);
    }
    if (!(o.intervalMs > 0)) throw new RangeError(`intervalMs must be > 0, got ${o.intervalMs}`);
    if (!(o.endMs >= o.startMs)) throw new RangeError("endMs must not be before startMs");
    for (const [name, value] of Object.entries({ faultyShare: o.faultyShare, offlineShare: o.offlineShare, malformedShare: o.malformedShare, agingShare: o.agingShare })) {
      if (!(value >= 0 && value <= 1)) throw new RangeError(`${name} must be from 0 to 1, got ${value}`);
    }

    const pad = (i: number) => String(i).padStart(4, "0");
    const meterId = (i: number) => `${o.prefix}-meter-${pad(i)}`;
    const vehicleId = (i: number) => `${o.prefix}-ev-${pad(i)}`;
    const total = o.meters + o.vehicles + o.batteries;

    const offlineProne = new Set(pick(total, o.offlineShare, createRandom(deriveSeed(o.seed, "offline-prone"))));
    const faulty = new Set(pick(o.vehicles, o.faultyShare, createRandom(deriveSeed(o.seed, "faulty"))));
    const aging = pick(o.batteries, o.agingShare, createRandom(deriveSeed(o.seed, "aging")));
    // Of the ageing units, every other one (in the drawn order) is failing; the rest are worn.
    const condition = new Map<number, BatteryCondition>(aging.map((unit, i) => [unit, i % 2 === 0 ? "worn" : "failing"]));
    const outages = (index: number) =>
      offlineProne.has(index) ? offlineWindows(createRandom(deriveSeed(o.seed, "outages", index)), o.startMs, o.endMs, o.intervalMs) : [];

    const devices: DeviceInfo[] = [];
    for (let i = 0; i < o.meters; i++) {
      const vehicleIds: string[] = [];
      for (let v = i; v < o.vehicles; v += o.meters) vehicleIds.push(vehicleId(v));
      const info: MeterInfo = {
        kind: "meter",
        index: devices.length,
        id: meterId(i),
        offline: outages(devices.length),
        role: vehicleIds.length > 0 ? "charge-point" : "household",
        vehicleIds,
      };
      devices.push(info);
      this.meters.push(new MeterSim(info, createRandom(deriveSeed(o.seed, "meter", i)), createRandom(deriveSeed(o.seed, "meter-days", i))));
    }
    for (let i = 0; i < o.vehicles; i++) {
      const r = createRandom(deriveSeed(o.seed, "vehicle-traits", i));
      const range = faulty.has(i) ? FAULTY_CHARGER_EFFICIENCY : HEALTHY_CHARGER_EFFICIENCY;
      const info: VehicleInfo = {
        kind: "vehicle",
        index: devices.length,
        id: vehicleId(i),
        offline: outages(devices.length),
        meterId: o.meters > 0 ? meterId(i % o.meters) : undefined,
        chargerEfficiency: round(uniform(r, range.min, range.max), 4),
        faultyCharger: faulty.has(i),
        chargerKw: r() < 0.6 ? 7.4 : 11,
        capacityKwh: Math.round(uniform(r, 50, 90)),
      };
      devices.push(info);
      this.vehicles.push(
        new VehicleSim(info, o, r, createRandom(deriveSeed(o.seed, "vehicle", i)), createRandom(deriveSeed(o.seed, "vehicle-days", i))),
      );
    }
    for (let i = 0; i < o.batteries; i++) {
      const r = createRandom(deriveSeed(o.seed, "battery-traits", i));
      const cond = condition.get(i) ?? "healthy";
      const wear = cond === "healthy" ? uniform(r, 0, 0.05) : cond === "worn" ? uniform(r, 0.54, 0.62) : uniform(r, 0.8, 0.9);
      const u = r();
      const info: BatteryInfo = {
        kind: "battery",
        index: devices.length,
        id: `${o.prefix}-bbu-${pad(i)}`,
        offline: outages(devices.length),
        condition: cond,
        nominalVoltage: u < 0.7 ? 51.2 : u < 0.8 ? 25.6 : u < 0.9 ? 12.8 : 409.6,
        initialWear: round(wear, 3),
      };
      devices.push(info);
      this.batteries.push(
        new BatterySim(info, o, r, createRandom(deriveSeed(o.seed, "battery", i)), createRandom(deriveSeed(o.seed, "battery-days", i))),
      );
    }
    this.devices = devices;
    this.sequence = devices.map(() => 0);
    this.malform = devices.map((d) => createRandom(deriveSeed(o.seed, "malformed", d.index)));
  }

  /** Simulated time of the next reading step; beyond endMs once the run is complete. */
  get nextStepAtMs(): number {
    return this.options.startMs + (this.step + 1) * this.options.intervalMs;
  }

  /** True once every step up to endMs has been generated. */
  get done(): boolean {
    return this.nextStepAtMs > this.options.endMs;
  }

  /**
   * Generates every reading observed up to simMs (and not after endMs), in step order: for each
   * step the meters, then the vehicles, then the battery units.
   */
  advanceTo(simMs: number): SimReading[] {
    const out: SimReading[] = [];
    const until = Math.min(simMs, this.options.endMs);
    while (this.nextStepAtMs <= until) {
      const t1 = this.nextStepAtMs;
      this.generateStep(t1 - this.options.intervalMs, t1, out);
      this.step++;
    }
    return out;
  }

  /** Whether the device is connected at simulated time simMs. */
  isOnline(index: number, simMs: number): boolean {
    const device = this.devices[index];
    if (device === undefined) throw new RangeError(`no device ${index}`);
    return !device.offline.some((w) => simMs >= w.fromMs && simMs < w.toMs);
  }

  private generateStep(t0: number, t1: number, out: SimReading[]): void {
    const chargerAc = new Float64Array(this.meters.length);
    const vehicleValues = this.vehicles.map((v, i) => {
      const { values, kwhAc } = v.step(t0, t1);
      if (this.meters.length > 0) chargerAc[i % this.meters.length]! += kwhAc;
      return values;
    });
    this.meters.forEach((m, i) => this.emit(m.info, t1, m.step(t0, t1, chargerAc[i]!), out));
    this.vehicles.forEach((v, i) => this.emit(v.info, t1, vehicleValues[i]!, out));
    this.batteries.forEach((b) => this.emit(b.info, t1, b.step(t0, t1), out));
  }

  private emit(info: DeviceInfo, t: number, values: SampleValues, out: SimReading[]): void {
    const seq = this.sequence[info.index]!++;
    const reading: SimReading = { deviceIndex: info.index, deviceId: info.id, eventId: eventId(t, seq), observedAtMs: t, sample: values };
    const share = this.options.malformedShare;
    // The malformed stream is drawn only when asked, so valid readings are the same either way.
    out.push(share > 0 && this.malform[info.index]!() < share ? corrupt(reading, this.malform[info.index]!) : reading);
  }
}

/** A ULID-like event id: the step time in Crockford base32 (sortable), then the device's sequence. */
export function eventId(observedAtMs: number, sequence: number): string {
  return `${crockford(observedAtMs, 10)}-${sequence}`;
}

// ---------------------------------------------------------------------------------------------
// Meters

class MeterSim {
  private readonly offsetV: number;
  private readonly avgKw: number;
  private register: number | undefined;
  private sagLeft = 0;
  private sagDepth = 0;
  private readonly dayFactors = new Map<number, number>();

  constructor(
    readonly info: MeterInfo,
    private readonly r: Random,
    private readonly days: Random,
  ) {
    this.offsetV = uniform(r, -4, 4);
    // A charge point's meter carries the charger and a few watts of standby and auxiliaries; a
    // household meter a home's load.
    this.avgKw = info.role === "charge-point" ? uniform(r, 0.002, 0.005) : uniform(r, 0.25, 0.7);
    this.register = r() < 0.7 ? round(uniform(r, 1_000, 40_000), 3) : undefined;
  }

  step(t0: number, t1: number, chargerKwhAc: number): MeterValues {
    const { r } = this;
    const dtH = (t1 - t0) / HOUR;
    const hour = hourOfDay(t0 + (t1 - t0) / 2);
    let kwh = this.avgKw * householdShape(hour) * this.dayFactor(t0) * Math.max(0, 1 + 0.12 * normal(r)) * dtH;
    if (this.info.role === "household" && r() < 1 - Math.exp(-0.25 * dtH)) {
      // A kettle, an oven, a washing machine: ~2 kW for a few minutes.
      kwh += uniform(r, 1.5, 2.5) * Math.min(dtH, uniform(r, 0.05, 0.3));
    }
    kwh += chargerKwhAc;
    kwh = round(kwh, 6);

    const loadKw = kwh / dtH;
    let voltage = 230 + this.offsetV + 1.8 * bump(hour, 13, 2.5) - 2.5 * bump(hour, 19.5, 2) - 0.25 * loadKw + 0.7 * normal(r);
    if (this.sagLeft === 0 && r() < 1 - Math.exp((-0.4 * (t1 - t0)) / DAY)) {
      // A grid sag (a fault upstream, a motor starting): 10–30 % down for one to three readings.
      this.sagLeft = 1 + Math.floor(r() * 3);
      this.sagDepth = uniform(r, 0.1, 0.3);
    }
    if (this.sagLeft > 0) {
      voltage *= 1 - this.sagDepth;
      this.sagLeft--;
    }
    if (this.register !== undefined) this.register = round(this.register + kwh, 6);
    return {
      kind: "meter",
      kwhConsumedAc: kwh,
      voltage: round(voltage, 1),
      ...(this.register !== undefined ? { registerKwhAc: this.register } : {}),
    };
  }

  private dayFactor(t: number): number {
    if (this.info.role === "charge-point") return 1;
    const day = Math.floor(t / DAY);
    let f = this.dayFactors.get(day);
    if (f === undefined) {
      f = uniform(this.days, 0.8, 1.2);
      this.dayFactors.set(day, f);
      this.dayFactors.delete(day - 2);
    }
    return f;
  }
}

/** A home's load through the day, averaging about 1: a morning and a larger evening peak. */
export function householdShape(hour: number): number {
  return 0.55 + 0.9 * bump(hour, 7.5, 1.2) + 1.6 * bump(hour, 19.5, 2) + 0.3 * bump(hour, 13, 2);
}

// ---------------------------------------------------------------------------------------------
// Vehicles

interface DayPlan {
  /** Unplugs and leaves, epoch ms. */
  readonly leaveMs: number;
  /** Comes home and plugs in, epoch ms. */
  readonly plugMs: number;
  /** Energy the day's driving takes out of the battery, kWh. */
  readonly driveKwh: number;
  /** SoC the evening session charges to, %. */
  readonly targetSoc: number;
}

type VehicleStatus = { readonly state: "plugged"; readonly targetSoc: number } | { readonly state: "driving"; readonly kwhPerHour: number } | { readonly state: "parked" };

class VehicleSim {
  private soc: number;
  private tempC: number;
  private register: number | undefined;
  private readonly ambientMean: number;
  private readonly ambientSwing: number;
  private readonly dailyDriveKwh: number;
  /** The charge limit the owner set; each session lands within a couple of points of it. */
  private readonly preferredSoc: number;
  private readonly plans = new Map<number, DayPlan>();

  constructor(
    readonly info: VehicleInfo,
    o: Required<FleetOptions>,
    traits: Random,
    private readonly r: Random,
    private readonly days: Random,
  ) {
    this.ambientMean = uniform(traits, 4, 22);
    this.ambientSwing = uniform(traits, 3, 7);
    this.dailyDriveKwh = uniform(traits, 14, 28);
    this.preferredSoc = uniform(traits, 85, 98);
    this.soc = uniform(traits, 35, 70);
    this.register = traits() < 0.5 ? round(uniform(traits, 2_000, 30_000), 3) : undefined;
    this.tempC = this.ambient(o.startMs);
  }

  /** One reading step: the reading, and the AC energy the charger drew for it (DC / efficiency). */
  step(t0: number, t1: number): { values: VehicleValues; kwhAc: number } {
    const { capacityKwh, chargerKw, chargerEfficiency } = this.info;
    let dc = 0;
    for (let a = t0; a < t1; a += MAX_SUBSTEP_MS) {
      const b = Math.min(t1, a + MAX_SUBSTEP_MS);
      const dtH = (b - a) / HOUR;
      const status = this.status(a);
      let powerDc = 0;
      if (status.state === "plugged" && this.soc < status.targetSoc) {
        const kwh = Math.min(chargerKw * chargerEfficiency * taper(this.soc) * dtH, ((status.targetSoc - this.soc) / 100) * capacityKwh);
        this.soc += (kwh / capacityKwh) * 100;
        dc += kwh;
        powerDc = kwh / dtH;
      } else if (status.state === "driving") {
        this.soc = Math.max(5, this.soc - ((status.kwhPerHour * dtH) / capacityKwh) * 100);
      }
      // The pack warms with charge power (≈ 0.9 °C per kW) and driving, and relaxes toward ambient.
      const target = this.ambient(a) + 0.9 * powerDc + (status.state === "driving" ? 3 : 0);
      this.tempC += (target - this.tempC) * (1 - Math.exp(-(b - a) / (30 * MINUTE)));
    }
    const kwhDc = round(dc, 6);
    if (this.register !== undefined) this.register = round(this.register + kwhDc, 6);
    return {
      values: {
        kind: "vehicle",
        soc: round(Math.min(100, this.soc), 1),
        kwhDeliveredDc: kwhDc,
        batteryTemp: round(this.tempC + 0.15 * normal(this.r), 1),
        ...(this.register !== undefined ? { registerKwhDc: this.register } : {}),
      },
      kwhAc: dc / chargerEfficiency,
    };
  }

  /** Plugged in from the evening until the morning; commutes for an hour each way; parked between. */
  private status(t: number): VehicleStatus {
    const day = Math.floor(t / DAY) * DAY;
    const today = this.plan(day);
    if (t < today.leaveMs) return { state: "plugged", targetSoc: this.plan(day - DAY).targetSoc };
    if (t >= today.plugMs) return { state: "plugged", targetSoc: today.targetSoc };
    if (t < today.leaveMs + HOUR || t >= today.plugMs - HOUR) return { state: "driving", kwhPerHour: today.driveKwh / 2 };
    return { state: "parked" };
  }

  private plan(day: number): DayPlan {
    let plan = this.plans.get(day);
    if (plan === undefined) {
      const d = this.days;
      plan = {
        leaveMs: day + uniform(d, 6.5, 8) * HOUR,
        plugMs: day + uniform(d, 17, 21.5) * HOUR,
        driveKwh: this.dailyDriveKwh * uniform(d, 0.75, 1.25),
        targetSoc: Math.min(100, this.preferredSoc + uniform(d, -2, 2)),
      };
      this.plans.set(day, plan);
      this.plans.delete(day - 3 * DAY);
    }
    return plan;
  }

  private ambient(t: number): number {
    return this.ambientMean + this.ambientSwing * Math.cos((2 * Math.PI * (hourOfDay(t) - 15)) / 24);
  }
}

/** Charge power as a share of the maximum: full up to 80 % SoC, then falling to 10 % at 100 %. */
export function taper(soc: number): number {
  return soc < 80 ? 1 : Math.max(0.1, 1 - (0.9 * (soc - 80)) / 20);
}

// ---------------------------------------------------------------------------------------------
// Battery backup units

interface Discharge {
  readonly fromMs: number;
  readonly toMs: number;
  /** Share of a new pack's charge drawn per hour. */
  readonly ratePerHour: number;
}

const WEAR_PER_DAY: Readonly<Record<BatteryCondition, number>> = { healthy: 0.0005, worn: 0.005, failing: 0.01 };
/** Fault codes a unit raises on its own; stress and wear make them likelier and stickier. */
const FAULT_CODES = ["E101_CELL_IMBALANCE", "E203_LOW_CAPACITY", "E517_FAN_FAULT", "E620_ISOLATION_WARNING", "E711_BMS_COMM"] as const;

/** Codes a unit's BMS reports on every reading, by condition. */
const LATCHED_CODES: Readonly<Record<BatteryCondition, readonly string[]>> = {
  healthy: [],
  worn: ["E205_CAPACITY_LOW"],
  failing: ["E205_CAPACITY_LOW", "E501_CELL_IMBALANCE"],
};
/** How much warmer an ageing pack runs than its load explains, °C, by condition. */
const LATCHED_HEAT_C: Readonly<Record<BatteryCondition, number>> = { healthy: 0, worn: 12, failing: 22 };

class BatterySim {
  private wear: number;
  private soc = 1;
  private tempC: number;
  private cutOff = false;
  private mode: "discharging" | "charging" | "float" = "float";
  private fault: string | undefined;
  private readonly floatV: number;
  private readonly roomOffset: number;
  private readonly discharges = new Map<number, Discharge[]>();

  constructor(
    readonly info: BatteryInfo,
    o: Required<FleetOptions>,
    traits: Random,
    private readonly r: Random,
    private readonly days: Random,
  ) {
    this.wear = info.initialWear;
    // LiFePO4 float voltage is about 3.375 V per 3.2 V cell.
    this.floatV = info.nominalVoltage * 1.055;
    this.roomOffset = uniform(traits, -2, 3);
    this.tempC = this.room(o.startMs);
  }

  step(t0: number, t1: number): BatteryValues {
    const { r } = this;
    const condition = this.info.condition;
    for (let a = t0; a < t1; a += MAX_SUBSTEP_MS) {
      const b = Math.min(t1, a + MAX_SUBSTEP_MS);
      const dtH = (b - a) / HOUR;
      const capacity = 1 - 0.5 * this.wear; // capacity fade
      const discharge = this.dischargeAt(a);
      if (discharge === undefined) this.cutOff = false;
      if (discharge !== undefined && !this.cutOff) {
        this.mode = "discharging";
        this.soc -= (discharge.ratePerHour * dtH) / capacity;
        if (this.soc <= 0.05) {
          // The BMS cuts the load off at 5 % and waits for the window to end.
          this.soc = 0.05;
          this.cutOff = true;
        }
      } else if (discharge === undefined && this.soc < 1) {
        this.mode = "charging";
        this.soc = Math.min(1, this.soc + (0.4 * dtH) / capacity);
      } else {
        this.mode = "float";
      }
      // Worn cells have more internal resistance: they heat more under load. An ageing pack also
      // runs warm at rest (cell leakage and a balancing circuit working without end).
      const rise =
        (this.mode === "discharging" ? 3 + 30 * this.wear : this.mode === "charging" ? 1.5 + 10 * this.wear : 0.5 + 4 * this.wear) +
        LATCHED_HEAT_C[condition];
      this.tempC += (this.room(a) + rise - this.tempC) * (1 - Math.exp(-(b - a) / (20 * MINUTE)));
      this.wear = Math.min(1, this.wear + (WEAR_PER_DAY[condition] * (b - a)) / DAY);
    }

    // Resting voltage fades slowly with wear; under load it sags with depth of discharge and
    // internal resistance, both worse for a worn pack.
    const rest = this.floatV * (1 - 0.03 * this.wear);
    const ocvDrop = (1 - this.soc) * (0.035 + 0.1 * this.wear);
    const irDrop = this.mode === "discharging" ? 0.015 + 0.2 * this.wear : this.mode === "charging" ? -0.012 : 0;
    const sag = ocvDrop + irDrop;
    const voltage = rest * (1 - sag) * (1 + 0.001 * normal(r));

    const stressed = this.mode === "discharging" || this.tempC > 40;
    if (this.fault !== undefined) {
      if (r() >= 0.2 + 0.75 * this.wear ** 2) this.fault = undefined;
    } else if (r() < 0.0003 + this.wear ** 2 * (stressed ? 0.03 : 0.003)) {
      this.fault = FAULT_CODES[Math.floor(r() * FAULT_CODES.length)];
    }
    const codes: string[] = this.fault !== undefined ? [this.fault] : [];
    // The BMS latches a condition until the unit is serviced, so the unit reports it every time:
    // an ageing unit looks unhealthy all day, not only during its evening discharge.
    codes.push(...LATCHED_CODES[condition]);
    if (this.tempC > 45) codes.push("E310_OVER_TEMPERATURE");
    if (sag > 0.2) codes.push("E402_CELL_UNDERVOLTAGE");

    return { kind: "battery", voltage: round(voltage, voltage > 100 ? 1 : 2), temperature: round(this.tempC, 1), errorCodes: codes };
  }

  /** The discharge under way at t: the evening self-consumption window or a grid outage. */
  private dischargeAt(t: number): Discharge | undefined {
    const day = Math.floor(t / DAY) * DAY;
    // A window may run past midnight: look at yesterday's too.
    return [...this.dischargesOf(day - DAY), ...this.dischargesOf(day)].find((d) => t >= d.fromMs && t < d.toMs);
  }

  private dischargesOf(day: number): Discharge[] {
    let list = this.discharges.get(day);
    if (list === undefined) {
      const d = this.days;
      const fromMs = day + uniform(d, 17, 19.5) * HOUR;
      const hours = uniform(d, 1.5, 3);
      list = [{ fromMs, toMs: fromMs + hours * HOUR, ratePerHour: uniform(d, 0.5, 0.7) / hours }];
      if (d() < 0.25) {
        const outageFrom = day + d() * DAY;
        list.push({ fromMs: outageFrom, toMs: outageFrom + uniform(d, 0.25, 1) * HOUR, ratePerHour: 0.4 });
      }
      this.discharges.set(day, list);
      this.discharges.delete(day - 3 * DAY);
    }
    return list;
  }

  private room(t: number): number {
    return 21 + this.roomOffset + 2 * Math.cos((2 * Math.PI * (hourOfDay(t) - 16)) / 24);
  }
}

// ---------------------------------------------------------------------------------------------
// Outages and malformed readings

/**
 * Outages of an offline-prone device, laid out over the run so that short and long runs both
 * show them: the first starts somewhere in the first half, each lasts 5–25 % of the run (at least
 * two readings, at most 12 h), and the gaps between them average a third of the run.
 */
function offlineWindows(r: Random, startMs: number, endMs: number, intervalMs: number): TimeWindow[] {
  const span = endMs - startMs;
  if (span <= 0) return [];
  const windows: TimeWindow[] = [];
  let t = startMs + uniform(r, 0.05, 0.5) * span;
  while (t < endMs) {
    const length = Math.min(12 * HOUR, Math.max(2 * intervalMs, uniform(r, 0.05, 0.25) * span));
    windows.push({ fromMs: Math.round(t), toMs: Math.round(t + length) });
    t += length + Math.max(intervalMs, (-Math.log(1 - r()) * span) / 3);
  }
  return windows;
}

const MALFORMED_BY_KIND: Readonly<Record<DeviceKind, readonly MalformedKind[]>> = {
  meter: ["voltage-in-millivolts", "negative-energy", "nan-voltage", "clock-a-day-ahead", "missing-observed-at"],
  vehicle: ["soc-over-100", "temperature-in-kelvin", "nan-energy", "clock-a-day-ahead", "missing-observed-at"],
  battery: ["empty-error-code", "temperature-in-kelvin", "nan-voltage", "clock-a-day-ahead", "missing-observed-at"],
};

/** The reading as a buggy device would send it: a unit mix-up, a NaN, a bad clock, a gap. */
function corrupt(reading: SimReading, r: Random): SimReading {
  const s = reading.sample;
  const choices = MALFORMED_BY_KIND[s.kind];
  const malformed = choices[Math.floor(r() * choices.length)]!;
  const base = { ...reading, malformed };
  switch (malformed) {
    case "clock-a-day-ahead":
      return { ...base, observedAtMs: reading.observedAtMs! + DAY };
    case "missing-observed-at":
      return { ...base, observedAtMs: undefined };
    case "voltage-in-millivolts":
      return { ...base, sample: { ...(s as MeterValues), voltage: (s as MeterValues).voltage * 1000 } };
    case "negative-energy":
      return { ...base, sample: { ...(s as MeterValues), kwhConsumedAc: -(s as MeterValues).kwhConsumedAc - 0.001 } };
    case "nan-voltage":
      return { ...base, sample: { ...(s as MeterValues | BatteryValues), voltage: Number.NaN } };
    case "soc-over-100":
      return { ...base, sample: { ...(s as VehicleValues), soc: round(100 + uniform(r, 5, 60), 1) } };
    case "temperature-in-kelvin":
      return s.kind === "vehicle"
        ? { ...base, sample: { ...s, batteryTemp: round(s.batteryTemp + 273.15, 2) } }
        : { ...base, sample: { ...(s as BatteryValues), temperature: round((s as BatteryValues).temperature + 273.15, 2) } };
    case "nan-energy":
      return { ...base, sample: { ...(s as VehicleValues), kwhDeliveredDc: Number.NaN } };
    case "empty-error-code":
      return { ...base, sample: { ...(s as BatteryValues), errorCodes: [...(s as BatteryValues).errorCodes, ""] } };
  }
}

// ---------------------------------------------------------------------------------------------
// Random numbers and small helpers

/** mulberry32: a small, fast, seedable generator; good enough for simulation, not for secrets. */
export function createRandom(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A 32-bit seed for one named stream of one run: FNV-1a over the labels, then a mixer. */
export function deriveSeed(seed: number, ...labels: (string | number)[]): number {
  let h = 0x811c9dc5;
  for (const ch of [seed, ...labels].join("/")) {
    h ^= ch.charCodeAt(0);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** round(share × count) distinct indices from 0 … count − 1, drawn by a seeded shuffle. */
function pick(count: number, share: number, r: Random): number[] {
  const indices = Array.from({ length: count }, (_, i) => i);
  for (let i = indices.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [indices[i], indices[j]] = [indices[j]!, indices[i]!];
  }
  return indices.slice(0, Math.round(share * count));
}

function uniform(r: Random, min: number, max: number): number {
  return min + r() * (max - min);
}

/** A standard normal draw (Box–Muller; one of the pair). */
function normal(r: Random): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

/** A bell around `center` hours with width `sigma` hours, on the 24-hour circle; 1 at the centre. */
function bump(hour: number, center: number, sigma: number): number {
  const d = Math.abs(hour - center);
  const wrapped = Math.min(d, 24 - d);
  return Math.exp(-(wrapped * wrapped) / (2 * sigma * sigma));
}

function hourOfDay(ms: number): number {
  return (((ms % DAY) + DAY) % DAY) / HOUR;
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

function crockford(value: number, length: number): string {
  let out = "";
  let v = Math.max(0, Math.floor(value));
  for (let i = 0; i < length; i++) {
    out = CROCKFORD[v % 32]! + out;
    v = Math.floor(v / 32);
  }
  return out;
}
