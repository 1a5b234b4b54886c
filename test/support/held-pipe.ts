// A statement the engine does not answer until a test lets it: an INSERT … FROM INFILE reading a
// FIFO blocks until something writes to the pipe and closes it. `running` resolves once the engine
// has opened the pipe — the statement is running, not merely sent: a statement sent after it on the
// same connection could otherwise reach the engine first (seen once, with both cores busy).
import { execFileSync } from "node:child_process";
import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import path from "node:path";

export interface HeldPipe {
  /** The pipe's path, for the statement's INFILE. */
  readonly path: string;
  /** Resolves once a reader (the engine) has the pipe open. */
  running(): Promise<void>;
  /** Writes `bytes` and closes the pipe, which ends the statement reading it. */
  release(bytes: Uint8Array): Promise<void>;
}

export function heldPipe(dir: string, name: string): HeldPipe {
  const fifo = path.join(dir, `${name}.pipe`);
  execFileSync("mkfifo", [fifo]);
  let writer: Promise<FileHandle> | undefined;
  // Opening a FIFO to write without blocking fails (ENXIO) until it has a reader. The handle is
  // kept: closing it would end the reader's input.
  const openWriter = async (): Promise<FileHandle> => {
    for (;;) {
      try {
        return await open(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENXIO") throw error;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
  };
  return {
    path: fifo,
    running: async () => {
      await (writer ??= openWriter());
    },
    release: async (bytes) => {
      const handle = await (writer ??= openWriter());
      await handle.write(bytes);
      await handle.close();
    },
  };
}
