// A statement's outcome, or a failure of the caller's choosing once it has run too long. The
// statement itself runs on (the engine cannot stop it), so its later rejection is swallowed here.

/** `work`'s outcome, or a rejection with `timedOut()` after timeoutMs. */
export function withTimeout<T>(work: Promise<T>, timeoutMs: number, timedOut: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timedOut()), timeoutMs);
  });
  // A late rejection of the abandoned work must not surface as unhandled.
  work.catch(() => undefined);
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
