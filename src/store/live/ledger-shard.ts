// One shard of the embedded store's dedupe ledger: its event ids in claim order (oldest first), in
// typed arrays rather than a JavaScript Map. Held as a Map, every id was a string the collector
// traced and copied out of the young generation, in a table of millions of entries: in the
// `throughput` bench that cost the main thread 2–3 µs per reading (a ledger that stored nothing
// made the run 7–32 % faster). Here an id is its characters in one array, its hash and its state
// in others, and a probe of an open-addressing table finds it: nothing per id for the collector.
//
// Entries are appended at the tail; forgetting, releasing and sweeping leave holes that are
// squeezed out when the tail reaches the end of the arrays (which grow then if they must), so
// iteration from the head is claim order, as a Map's insertion order was.

/** The holder of an entry stored on its own (not with its batch): it keeps only its expiry, in whole seconds. */
export const STORED_ALONE = 0;
/** An entry removed; its slot in the arrays waits for the next compaction. */
const GONE = -1;
/** A slot of the hash table that once held an entry: probes go on past it. */
const TOMBSTONE = -1;

const INITIAL_ENTRIES = 256;

/** A per-process seed for the ids' hash, so ids cannot be chosen to collide in every service. */
const SEED = (Math.random() * 2 ** 32) >>> 0;

/** The hash of the (device, event) pair: FNV-1a over both ids' UTF-16 code units, apart. */
export function hashEvent(deviceId: string, eventId: string): number {
  let hash = 0x811c9dc5 ^ SEED;
  for (let i = 0; i < deviceId.length; i++) hash = Math.imul(hash ^ deviceId.charCodeAt(i), 0x01000193);
  // The device id's length, so ("ab", "c") and ("a", "bc") hash apart.
  hash = Math.imul(hash ^ (deviceId.length + 0x10000), 0x01000193);
  for (let i = 0; i < eventId.length; i++) hash = Math.imul(hash ^ eventId.charCodeAt(i), 0x01000193);
  return (hash ^ (hash >>> 15)) >>> 0;
}

export class LedgerShard {
  /** Entries in use, holes included: [head, tail). */
  private head = 0;
  private tail = 0;
  /** Entries not GONE. */
  private count = 0;
  /** Per entry: a claim's number (> 0), STORED_ALONE, or GONE. */
  private holder = new Float64Array(INITIAL_ENTRIES);
  /**
   * Per entry stored alone: when it is forgotten, in whole seconds since the epoch. A double, as
   * the Map held it: 32 bits would wrap in 2106 (or sooner with a long DEDUPE_WINDOW) and store a
   * resend twice.
   */
  private expirySeconds = new Float64Array(INITIAL_ENTRIES);
  private hashes = new Uint32Array(INITIAL_ENTRIES);
  /** Per entry: where its ids start in `bytes`, the device id's length, then the event id's (in UTF-16 code units). */
  private byteStart = new Uint32Array(INITIAL_ENTRIES);
  private deviceLength = new Uint32Array(INITIAL_ENTRIES);
  private eventLength = new Uint32Array(INITIAL_ENTRIES);
  /** Per entry: whether its ids are stored two bytes a code unit (some is above U+00FF), or one. */
  private wide = new Uint8Array(INITIAL_ENTRIES);
  /**
   * Each entry's device id then event id, back to back: a byte per code unit when every one fits
   * (ids are nearly always ASCII), else two, little end first.
   */
  private bytes = new Uint8Array(INITIAL_ENTRIES * 32);
  private byteTail = 0;
  /** Open addressing, twice the entries' room: entry index + 1, 0 for empty, or TOMBSTONE. */
  private slots = new Int32Array(INITIAL_ENTRIES * 2);

  get size(): number {
    return this.count;
  }

  /** The entry of (deviceId, eventId), or -1. */
  find(deviceId: string, eventId: string, hash: number): number {
    const mask = this.slots.length - 1;
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const held = this.slots[slot]!;
      if (held === 0) return -1;
      if (held === TOMBSTONE) continue;
      const entry = held - 1;
      if (this.hashes[entry] === hash && this.sameIds(entry, deviceId, eventId)) return entry;
    }
  }

  /** Appends an entry (the pair must not be in the shard) and answers its index. */
  append(deviceId: string, eventId: string, hash: number, holder: number, expirySeconds = 0): number {
    const wide = isWide(deviceId) || isWide(eventId);
    const length = (deviceId.length + eventId.length) * (wide ? 2 : 1);
    if (this.tail === this.holder.length || this.byteTail + length > this.bytes.length) this.compact(length);
    const entry = this.tail++;
    this.holder[entry] = holder;
    this.expirySeconds[entry] = expirySeconds;
    this.hashes[entry] = hash;
    this.byteStart[entry] = this.byteTail;
    this.deviceLength[entry] = deviceId.length;
    this.eventLength[entry] = eventId.length;
    this.wide[entry] = wide ? 1 : 0;
    let at = this.byteTail;
    at = wide ? writeWide(this.bytes, at, deviceId) : writeNarrow(this.bytes, at, deviceId);
    at = wide ? writeWide(this.bytes, at, eventId) : writeNarrow(this.bytes, at, eventId);
    this.byteTail = at;
    this.placeInTable(entry, hash);
    this.count++;
    return entry;
  }

  holderOf(entry: number): number {
    return this.holder[entry]!;
  }

  expirySecondsOf(entry: number): number {
    return this.expirySeconds[entry]!;
  }

  /** Sets what the entry is held by, in place: it keeps its place in claim order. */
  setHolder(entry: number, holder: number, expirySeconds = 0): void {
    this.holder[entry] = holder;
    this.expirySeconds[entry] = expirySeconds;
  }

  remove(entry: number): void {
    const mask = this.slots.length - 1;
    for (let slot = this.hashes[entry]! & mask; ; slot = (slot + 1) & mask) {
      if (this.slots[slot] === entry + 1) {
        this.slots[slot] = TOMBSTONE;
        break;
      }
      if (this.slots[slot] === 0) throw new Error(`ledger entry ${entry} is not in its table`);
    }
    this.holder[entry] = GONE;
    this.count--;
    while (this.head < this.tail && this.holder[this.head] === GONE) this.head++;
  }

  /**
   * Calls visit with each entry, oldest first, until it answers false. visit may remove the entry
   * it is given (and only that one).
   */
  forEachOldestFirst(visit: (entry: number) => boolean): void {
    for (let entry = this.head; entry < this.tail; entry++) {
      if (this.holder[entry] !== GONE && !visit(entry)) return;
    }
  }

  private sameIds(entry: number, deviceId: string, eventId: string): boolean {
    if (this.deviceLength[entry] !== deviceId.length || this.eventLength[entry] !== eventId.length) return false;
    const { bytes } = this;
    let at = this.byteStart[entry]!;
    if (this.wide[entry] === 1) {
      for (let i = 0; i < deviceId.length; i++, at += 2) if ((bytes[at]! | (bytes[at + 1]! << 8)) !== deviceId.charCodeAt(i)) return false;
      for (let i = 0; i < eventId.length; i++, at += 2) if ((bytes[at]! | (bytes[at + 1]! << 8)) !== eventId.charCodeAt(i)) return false;
      return true;
    }
    // A code unit above U+00FF is never equal to a byte.
    for (let i = 0; i < deviceId.length; i++) if (bytes[at++] !== deviceId.charCodeAt(i)) return false;
    for (let i = 0; i < eventId.length; i++) if (bytes[at++] !== eventId.charCodeAt(i)) return false;
    return true;
  }

  private storedBytes(entry: number): number {
    return (this.deviceLength[entry]! + this.eventLength[entry]!) * (this.wide[entry] === 1 ? 2 : 1);
  }

  private placeInTable(entry: number, hash: number): void {
    const mask = this.slots.length - 1;
    let slot = hash & mask;
    while (this.slots[slot]! > 0) slot = (slot + 1) & mask;
    this.slots[slot] = entry + 1;
  }

  /**
   * Moves the entries left in [head, tail) to the front of arrays with room for twice as many
   * (at least as large as now) and `moreBytes` more bytes of ids, and builds the table anew (so its
   * tombstones go). Like a Map's rehash, it takes time in proportion to the shard's size.
   */
  private compact(moreBytes: number): void {
    const entries = Math.max(this.holder.length, 2 ** Math.ceil(Math.log2(Math.max(INITIAL_ENTRIES, 2 * (this.count + 1)))));
    let liveBytes = 0;
    for (let entry = this.head; entry < this.tail; entry++) if (this.holder[entry] !== GONE) liveBytes += this.storedBytes(entry);
    const byteRoom = Math.max(this.bytes.length, 2 ** Math.ceil(Math.log2(2 * (liveBytes + moreBytes) + 1)));

    const holder = new Float64Array(entries);
    const expirySeconds = new Float64Array(entries);
    const hashes = new Uint32Array(entries);
    const byteStart = new Uint32Array(entries);
    const deviceLength = new Uint32Array(entries);
    const eventLength = new Uint32Array(entries);
    const wide = new Uint8Array(entries);
    const bytes = new Uint8Array(byteRoom);
    let to = 0;
    let byteAt = 0;
    // Ids lie in claim order, back to back but for the removed entries' gaps: each run of them
    // between gaps is copied at once (a view per entry was most of what compaction allocated).
    let runStart = 0;
    let runEnd = 0;
    let runAt = 0;
    const copyRun = () => {
      if (runEnd > runStart) bytes.set(this.bytes.subarray(runStart, runEnd), runAt);
    };
    for (let from = this.head; from < this.tail; from++) {
      if (this.holder[from] === GONE) continue;
      holder[to] = this.holder[from]!;
      expirySeconds[to] = this.expirySeconds[from]!;
      hashes[to] = this.hashes[from]!;
      deviceLength[to] = this.deviceLength[from]!;
      eventLength[to] = this.eventLength[from]!;
      wide[to] = this.wide[from]!;
      const start = this.byteStart[from]!;
      if (start !== runEnd) {
        copyRun();
        runStart = start;
        runAt = byteAt;
      }
      runEnd = start + this.storedBytes(from);
      byteStart[to] = byteAt;
      byteAt += runEnd - start;
      to++;
    }
    copyRun();
    this.holder = holder;
    this.expirySeconds = expirySeconds;
    this.hashes = hashes;
    this.byteStart = byteStart;
    this.deviceLength = deviceLength;
    this.eventLength = eventLength;
    this.wide = wide;
    this.bytes = bytes;
    this.head = 0;
    this.tail = to;
    this.byteTail = byteAt;
    this.slots = new Int32Array(entries * 2);
    for (let entry = 0; entry < to; entry++) this.placeInTable(entry, hashes[entry]!);
  }
}

function isWide(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0xff) return true;
  return false;
}

function writeNarrow(bytes: Uint8Array, at: number, text: string): number {
  for (let i = 0; i < text.length; i++) bytes[at++] = text.charCodeAt(i);
  return at;
}

function writeWide(bytes: Uint8Array, at: number, text: string): number {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    bytes[at++] = unit & 0xff;
    bytes[at++] = unit >>> 8;
  }
  return at;
}
