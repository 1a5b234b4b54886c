// The embedded engine reads this process's standard input during inserts, and can block on it.
import { fstatSync } from "node:fs";
import { isatty } from "node:tty";

/**
 * Makes fd 0 non-blocking when it is a pipe or a socket, before the embedded engine is loaded.
 *
 * On every insert that carries rows (ours: `INSERT … FROM INFILE`), the engine checks whether more
 * rows wait on standard input: it reads fd 0's flags, sets O_NONBLOCK, reads, and sets the flags it
 * read back — unlocked, from each connection's own thread. Two inserts on different connections
 * can interleave so that one restores "blocking" just before the other reads: on a pipe or socket
 * that stays open and silent (a supervisor's, a test runner's), that read, and so the insert, never
 * return. Seen in about one test-file run in a hundred (vitest's workers get such a socket) as a
 * small insert left hanging while the same batch's other tables took 20 ms, and reproduced with
 * chdb alone under the same stdin; a thread stuck so is in read(0) under chdb_query_n.
 *
 * Node sets O_NONBLOCK on fd 0 when it opens it as a stream; from then on every flag the engine
 * reads, and so every flag it restores, is non-blocking, and a read finds nothing and returns. The
 * stream stays paused: it reads nothing itself and does not keep the process alive. A terminal the
 * engine does not read, and /dev/null and files never block, so those are left alone.
 */
export function keepEngineOffBlockingStandardInput(): void {
  if (isatty(0)) return;
  let kind;
  try {
    kind = fstatSync(0);
  } catch {
    return; // fd 0 closed: nothing to read from
  }
  if (!kind.isFIFO() && !kind.isSocket()) return;
  process.stdin.pause();
}
