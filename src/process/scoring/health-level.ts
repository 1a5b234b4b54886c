// The three-step health scale every scorer answers in, so battery and vehicle answers compare.

/** OK: nothing to do. WARN: look at it soon. CRITICAL: act now. */
export type HealthLevel = "OK" | "WARN" | "CRITICAL";
