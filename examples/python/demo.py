"""An hour of one charger, one vehicle and one battery unit, sent and asked about from Python.

    python3 examples/python/demo.py --target localhost:8080

With authentication on, give the credentials in the environment (never on the command line):
WATTSTREAM_OPERATOR_KEY (an operator key), and WATTSTREAM_METER_TOKEN, WATTSTREAM_VEHICLE_TOKEN,
WATTSTREAM_BATTERY_TOKEN (each device's token). `--json` prints one JSON object of what came back
instead of the narration.

What it does, in order: links the vehicle to the meter; streams the meter's hour (150 kWh AC in
ten readings, one of them NaN, which the service rejects) and sends it again (duplicates, nothing
stored twice); sends the vehicle's hour (120 kWh DC) on one SyncReadings stream, one batch per
acknowledgement; watches the vehicle's live state while one more reading arrives; asks for the
vehicle's charging efficiency (0.80, below the 0.85 threshold: an alert) and the battery unit's
health; and shows that a call without credentials is refused when authentication is on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

import grpc
from google.protobuf.json_format import MessageToDict

from wattstream_client import Device, Fleet, battery_reading, fleet, meter_reading, open_channel, vehicle_reading


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="localhost:8080", help="host:port of the service")
    parser.add_argument("--ca", help="PEM file of the CA that signed the service's certificate (TLS)")
    parser.add_argument("--run", default=uuid.uuid4().hex[:8], help="suffix of the device ids (py-meter-RUN, …)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the narration")
    args = parser.parse_args()

    say = (lambda *_: None) if args.json else print
    root_certificates = open(args.ca, "rb").read() if args.ca else None
    channel = open_channel(args.target, root_certificates)
    meter_id, vehicle_id, battery_id = f"py-meter-{args.run}", f"py-ev-{args.run}", f"py-bbu-{args.run}"
    meter = Device(channel, meter_id, os.environ.get("WATTSTREAM_METER_TOKEN"))
    vehicle = Device(channel, vehicle_id, os.environ.get("WATTSTREAM_VEHICLE_TOKEN"))
    battery = Device(channel, battery_id, os.environ.get("WATTSTREAM_BATTERY_TOKEN"))
    operator = Fleet(channel, os.environ.get("WATTSTREAM_OPERATOR_KEY"))
    report: dict = {"meter_id": meter_id, "vehicle_id": vehicle_id, "battery_id": battery_id}

    now_ms = int(time.time() * 1000)
    minute = 60_000
    start_ms = now_ms - 50 * minute

    operator.link_vehicle_to_meter(vehicle_id, meter_id, valid_from_ms=now_ms - 120 * minute)
    say(f"linked {vehicle_id} to {meter_id}")

    # The meter's hour: ten readings of 15 kWh, and one NaN voltage the service must reject.
    meter_hour = [meter_reading(meter_id, start_ms + i * minute, 15.0, 230.0 + i % 3) for i in range(10)]
    meter_hour.insert(5, meter_reading(meter_id, start_ms + 5 * minute + 30_000, 1.0, float("nan")))
    sent = meter.send(meter_hour, per_message=4)
    resent = meter.send(meter_hour, per_message=4)
    report["meter_send"] = {"accepted": sent.accepted, "duplicates": sent.duplicates, "rejected": [MessageToDict(r) for r in sent.rejected]}
    report["meter_resend"] = {"accepted": resent.accepted, "duplicates": resent.duplicates, "rejected": len(resent.rejected)}
    say(f"meter: {sent.accepted} stored, {len(sent.rejected)} rejected ({sent.rejected[0].message if sent.rejected else '-'}); sent again: {resent.duplicates} duplicates")

    # The vehicle's hour on one SyncReadings stream, in three batches, each acknowledged before the next.
    vehicle_hour = [vehicle_reading(vehicle_id, start_ms + i * minute, 40.0 + 4 * i, 12.0, 31.0) for i in range(10)]
    responses = vehicle.sync([vehicle_hour[0:4], vehicle_hour[4:8], vehicle_hour[8:10]])
    report["vehicle_sync"] = [{"acknowledged": r.acknowledged, "accepted": r.accepted, "duplicates": r.duplicates} for r in responses]
    say(f"vehicle: acknowledged {' → '.join(str(r.acknowledged) for r in responses)} on one open stream")

    # The battery unit: three healthy readings.
    battery_result = battery.send([battery_reading(battery_id, start_ms + i * 20 * minute, 52.0, 24.0) for i in range(3)])
    report["battery_send"] = {"accepted": battery_result.accepted}

    # Watch the vehicle: its current state first, then the change one more reading makes.
    watch = operator.watch([vehicle_id])
    try:
        first = watch.next_state()
        latest = vehicle_reading(vehicle_id, now_ms - 30_000, 85.0, 0.0, 33.0)
        vehicle.send([latest])
        changed = watch.next_state()
    finally:
        watch.close()
    report["watch"] = {"first": MessageToDict(first), "changed": MessageToDict(changed), "latest_event_id": latest.event_id}
    say(f"watch: {first.vehicle.soc:.0f} % → {changed.vehicle.soc:.0f} % as the reading arrived")

    performance = operator.vehicle_performance(vehicle_id, window_hours=1, window_end_ms=now_ms)
    report["performance"] = MessageToDict(performance)
    say(
        f"efficiency: {performance.total_kwh_delivered_dc:g} kWh DC / {performance.total_kwh_consumed_ac:g} kWh AC = "
        f"{performance.efficiency_ratio:.2f} ({performance.alert.message or 'no alert'})"
    )

    health = operator.device_health(battery_id, window_hours=1)
    report["health"] = MessageToDict(health)
    say(f"battery: score {health.latest.health_score}, {fleet.HealthLevel.Name(health.latest.health_level)}")

    report["live_state"] = [MessageToDict(s) for s in operator.live_state([meter_id, vehicle_id, battery_id])]

    # Without credentials: refused when the service has authentication on, answered when it is off.
    try:
        Fleet(channel).live_state([vehicle_id])
        report["without_credentials"] = "OK"
    except grpc.RpcError as error:
        report["without_credentials"] = error.code().name
    say(f"a call without credentials: {report['without_credentials']}")

    if args.json:
        print(json.dumps(report))
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
