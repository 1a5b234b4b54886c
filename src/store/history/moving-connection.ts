// The embedded engine's connection for the service's reads (and its few writes outside the
// history sink), able to move on from a statement that never returns. A connection runs one
// statement at a time, so such a statement would hold every later fleet call and history lookup
// behind it; the engine has been seen to leave an insert hanging (see the history sink), and nothing
// says a read cannot hang too. A statement that finds one running longer than stuckAfterMs goes to
// a new connection, which from then on is the current one; the old one is closed when its
// statements return, if they ever do.
import type { ClickHouseClientConfigOptions } from "@clickhouse/client";

export type EngineConnection = NonNullable<ClickHouseClientConfigOptions["connection"]>;

export interface MovingConnectionOptions {
  /**
   * How long a statement may run before later ones move to a new connection, in ms; 0 moves them
   * whenever a statement is running (for a caller that sends one at a time, as the inserts do).
   */
  readonly stuckAfterMs: number;
  /** Called on each move, with how long the oldest statement had run. */
  readonly onMoved?: (runningMs: number) => void;
}

interface Slot {
  readonly connection: EngineConnection;
  /** When each running statement started (performance.now()), by a key of its own. */
  readonly running: Map<symbol, number>;
  /** Settles once the connection is on the session's database; a statement waits for it. */
  readonly ready: Promise<void>;
  /** Set when switching the database failed: the next statement moves on again. */
  unusable: boolean;
}

/** `USE db`, the one statement that changes what a connection's later statements mean. */
const USE_DATABASE = /^\s*USE\s+([A-Za-z_][A-Za-z0-9_]*)\s*;?\s*$/i;

/** Whether a statement binds parameters: the embedded engine runs those one at a time process-wide. */
function bindsParameters(params: { query_params?: Record<string, unknown> }): boolean {
  return params.query_params !== undefined && Object.keys(params.query_params).length > 0;
}

export class MovingConnection implements EngineConnection {
  private current: Slot;
  /**
   * When each unfinished statement that binds parameters was sent (performance.now()). chdb runs
   * those one at a time in the whole process, on every connection, so one that never returns
   * holds all later ones — moving to a new connection does not help them (see heldBoundMs).
   */
  private readonly boundSent = new Map<symbol, number>();
  /** The database the session switched to, set again on every new connection. */
  private database: string | undefined;
  private closed = false;

  constructor(
    private readonly open: () => EngineConnection,
    private readonly options: MovingConnectionOptions,
  ) {
    this.current = { connection: open(), running: new Map(), ready: Promise.resolve(), unusable: false };
  }

  ping(params: Parameters<EngineConnection["ping"]>[0]): ReturnType<EngineConnection["ping"]> {
    return this.run((c) => c.ping(params));
  }

  query(params: Parameters<EngineConnection["query"]>[0]): ReturnType<EngineConnection["query"]> {
    return this.run((c) => c.query(params), bindsParameters(params));
  }

  insert(params: Parameters<EngineConnection["insert"]>[0]): ReturnType<EngineConnection["insert"]> {
    return this.run((c) => c.insert(params), bindsParameters(params));
  }

  exec(params: Parameters<EngineConnection["exec"]>[0]): ReturnType<EngineConnection["exec"]> {
    return this.run((c) => c.exec(params), bindsParameters(params));
  }

  async command(params: Parameters<EngineConnection["command"]>[0]): ReturnType<EngineConnection["command"]> {
    const result = await this.run((c) => c.command(params), bindsParameters(params));
    const use = USE_DATABASE.exec(params.query);
    if (use !== null) this.database = use[1];
    return result;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.current.running.size === 0) await this.current.connection.close();
  }

  /**
   * How long the oldest unfinished statement that binds parameters has been waiting for its
   * answer, in ms (0 when there is none). Past any statement's normal time it means the engine's
   * bound statements are held: every fleet call and history lookup waits behind that one. (The
   * service passes statements no abort signal, so one counted here is one the engine still runs.)
   */
  heldBoundMs(): number {
    if (this.boundSent.size === 0) return 0;
    return performance.now() - Math.min(...this.boundSent.values());
  }

  private async run<T>(statement: (connection: EngineConnection) => Promise<T>, bound = false): Promise<T> {
    const slot = this.slotForNext();
    const key = Symbol();
    const sentAt = performance.now();
    slot.running.set(key, sentAt);
    if (bound) this.boundSent.set(key, sentAt);
    try {
      await slot.ready;
      return await statement(slot.connection);
    } finally {
      this.boundSent.delete(key);
      slot.running.delete(key);
      if (slot.running.size === 0 && (slot !== this.current || this.closed)) await slot.connection.close();
    }
  }

  private slotForNext(): Slot {
    const oldest = Math.min(...this.current.running.values());
    const runningMs = performance.now() - oldest;
    if (!this.current.unusable && !(runningMs >= this.options.stuckAfterMs)) return this.current;
    const connection = this.open();
    const database = this.database;
    const ready = database === undefined ? Promise.resolve() : connection.command({ query: `USE ${database}` }).then(() => undefined);
    const next: Slot = { connection, running: new Map(), ready, unusable: false };
    ready.catch(() => (next.unusable = true));
    const left = this.current;
    this.current = next;
    if (left.running.size === 0) void left.connection.close();
    if (!left.unusable) this.options.onMoved?.(runningMs);
    return next;
  }
}
