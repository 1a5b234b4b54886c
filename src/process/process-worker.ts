// The Piscina worker: runs processBatch and moves the encoded payloads back without copying.
import { move, transferableSymbol, valueSymbol } from "piscina";
import { processBatch, type ProcessTask } from "./process-batch.js";

export default function processInWorker(task: ProcessTask) {
  const batch = processBatch(task);
  const transfer: ArrayBuffer[] = [];
  for (const table of Object.values(batch.tables)) {
    transfer.push(table.payload.buffer as ArrayBuffer, table.rowEnds.buffer as ArrayBuffer, table.offsets.buffer as ArrayBuffer);
  }
  // Piscina's Transferable shape: the value is structured-cloned, the listed buffers moved.
  return move({ [transferableSymbol]: transfer, [valueSymbol]: batch });
}

/**
 * Does nothing: ProcessPool.warmUp runs it so that a worker has loaded this module (and, from
 * TypeScript sources, compiled it) before the service takes readings, not during the first batch.
 */
export function warmUp(): void {}
