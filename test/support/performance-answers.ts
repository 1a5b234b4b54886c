// How many GetVehiclePerformance answers a running service gave from its snapshot of every
// device's default window and how many by a statement of their own, as its /metrics counts them
// (wattstream_vehicle_performance_answers_total). Tests and bench:query read which path was taken.

/** The counts so far; `baseUrl` is the service's http(s)://host:port. */
export async function performanceAnswers(baseUrl: string): Promise<{ snapshot: number; statement: number }> {
  const metrics = await (await fetch(`${baseUrl}/metrics`)).text();
  const count = (source: string) =>
    Number(new RegExp(`^wattstream_vehicle_performance_answers_total\\{source="${source}"\\} (\\d+)$`, "m").exec(metrics)?.[1] ?? 0);
  return { snapshot: count("snapshot"), statement: count("statement") };
}
