"""A wattstream client in Python, over stock gRPC (grpcio) and stubs generated from proto/.

Generate the stubs first (README.md beside this file); they are looked for in ./gen, or in the
folder named by WATTSTREAM_PY_GEN.

What a device must do to never lose a reading, and what this module does:
- keep every reading until the service has settled it: stored (`accepted`), stored before
  (`duplicates`), or rejected for good (a rejection without `retryable`);
- resend, with the same event_id, whatever a failed call carried and every reading rejected as
  `retryable` (another call is storing it right now) — the service counts a reading it already
  has as a duplicate, so resending is always safe;
- wait before resending: the service's `grpc-retry-pushback-ms` when it sends one, else an
  exponential backoff with jitter.
"""

from __future__ import annotations

import os
import queue
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Sequence

sys.path.insert(0, os.environ.get("WATTSTREAM_PY_GEN") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

from wattstream.fleet.v1 import fleet_service_pb2 as fleet  # noqa: E402
from wattstream.fleet.v1 import fleet_service_pb2_grpc as fleet_grpc  # noqa: E402
from wattstream.telemetry.v1 import ingest_service_pb2 as ingest  # noqa: E402
from wattstream.telemetry.v1 import ingest_service_pb2_grpc as ingest_grpc  # noqa: E402
from wattstream.telemetry.v1 import reading_pb2 as telemetry  # noqa: E402

# Codes after which the same readings may be sent again; every other code is final
# (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED: fix the call, do not repeat it).
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED})


def timestamp(epoch_ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(epoch_ms)
    return ts


def new_event_id() -> str:
    return str(uuid.uuid4())


def meter_reading(device_id: str, observed_ms: int, kwh_consumed_ac: float, voltage: float, event_id: Optional[str] = None) -> telemetry.Reading:
    return telemetry.Reading(
        event_id=event_id or new_event_id(),
        device_id=device_id,
        observed_at=timestamp(observed_ms),
        meter=telemetry.MeterSample(kwh_consumed_ac=kwh_consumed_ac, voltage=voltage),
    )


def vehicle_reading(device_id: str, observed_ms: int, soc: float, kwh_delivered_dc: float, battery_temp: float, event_id: Optional[str] = None) -> telemetry.Reading:
    return telemetry.Reading(
        event_id=event_id or new_event_id(),
        device_id=device_id,
        observed_at=timestamp(observed_ms),
        vehicle=telemetry.VehicleSample(soc=soc, kwh_delivered_dc=kwh_delivered_dc, battery_temp=battery_temp),
    )


def battery_reading(device_id: str, observed_ms: int, voltage: float, temperature: float, error_codes: Sequence[str] = (), event_id: Optional[str] = None) -> telemetry.Reading:
    return telemetry.Reading(
        event_id=event_id or new_event_id(),
        device_id=device_id,
        observed_at=timestamp(observed_ms),
        battery=telemetry.BatterySample(voltage=voltage, temperature=temperature, error_codes=list(error_codes)),
    )


def open_channel(target: str, root_certificates: Optional[bytes] = None) -> grpc.Channel:
    """A channel to the service: TLS when given the CA that signed the service's certificate."""
    if root_certificates is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root_certificates))


@dataclass
class SendResult:
    """What became of a device's readings once every one of them is settled."""

    accepted: int = 0
    duplicates: int = 0
    # Rejections for good (the reading is wrong and sending it again will not help).
    rejected: list = field(default_factory=list)
    # Calls made, the first one included.
    calls: int = 0


class RetriesExhausted(Exception):
    """Readings still unsettled after the last attempt; the device keeps them and tries later."""

    def __init__(self, unsettled: Sequence[telemetry.Reading], last_error: Optional[BaseException]):
        super().__init__(f"{len(unsettled)} readings not settled after the last attempt: {last_error}")
        self.unsettled = list(unsettled)
        self.last_error = last_error


def retry_delay_seconds(error: Optional[grpc.RpcError], attempt: int, base: float = 0.2, cap: float = 10.0) -> float:
    """The service's pushback when it sent one, else exponential backoff with full jitter."""
    if error is not None:
        for key, value in error.trailing_metadata() or ():
            if key == "grpc-retry-pushback-ms":
                return max(0, int(value)) / 1000
    return random.uniform(0, min(cap, base * 2**attempt))


class Device:
    """One device's sending side, authenticated with its own token when the service asks for one."""

    def __init__(self, channel: grpc.Channel, device_id: str, token: Optional[str] = None, max_attempts: int = 8):
        self.device_id = device_id
        self._ingest = ingest_grpc.IngestServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._max_attempts = max_attempts

    def send(self, readings: Sequence[telemetry.Reading], per_message: int = 100, timeout: float = 30.0) -> SendResult:
        """Streams the readings (StreamReadings, `per_message` to a message) until each is settled."""
        result = SendResult()
        outbox = list(readings)
        last_error: Optional[BaseException] = None
        for attempt in range(self._max_attempts):
            if attempt > 0:
                time.sleep(retry_delay_seconds(last_error if isinstance(last_error, grpc.RpcError) else None, attempt))
            result.calls += 1
            messages = (ingest.StreamReadingsRequest(readings=outbox[i : i + per_message]) for i in range(0, len(outbox), per_message))
            try:
                response = self._ingest.StreamReadings(messages, metadata=self._metadata, timeout=timeout)
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE_CODES:
                    raise
                # Some of the call's readings may be stored already: the resend counts them as
                # duplicates, so nothing is lost and nothing is stored twice.
                last_error = error
                continue
            result.accepted += response.accepted
            result.duplicates += response.duplicates
            result.rejected.extend(r for r in response.rejected if not r.retryable)
            # `index` counts across the call's messages, so it indexes the outbox as sent.
            outbox = [outbox[r.index] for r in response.rejected if r.retryable]
            if not outbox:
                return result
            last_error = None
        raise RetriesExhausted(outbox, last_error)

    def sync(self, batches: Iterable[Sequence[telemetry.Reading]], timeout: float = 30.0) -> list:
        """Sends each batch on one SyncReadings stream, waiting for the service to acknowledge it
        before sending the next, as firmware that keeps one stream open does; returns the responses.

        The stream stays open throughout: `acknowledged` counts the stream's settled readings from
        the first, so a device drops exactly those from its outbox without closing the stream.
        """
        requests: "queue.Queue[Optional[ingest.SyncReadingsRequest]]" = queue.Queue()

        def request_stream() -> Iterator[ingest.SyncReadingsRequest]:
            while (request := requests.get()) is not None:
                yield request

        call = self._ingest.SyncReadings(request_stream(), metadata=self._metadata, timeout=timeout)
        responses = []
        sent = 0
        try:
            for batch in batches:
                requests.put(ingest.SyncReadingsRequest(readings=list(batch)))
                sent += len(batch)
                while not responses or responses[-1].acknowledged < sent:
                    response = next(call, None)
                    if response is None:
                        raise RuntimeError(f"the stream ended with {sent - (responses[-1].acknowledged if responses else 0)} readings unacknowledged")
                    responses.append(response)
        finally:
            requests.put(None)
        # The stream ends once the service has answered everything sent on it.
        responses.extend(call)
        return responses


class Fleet:
    """The operator's side: FleetService, authenticated with an operator key when asked for one."""

    def __init__(self, channel: grpc.Channel, api_key: Optional[str] = None):
        self._fleet = fleet_grpc.FleetServiceStub(channel)
        self._metadata = (("x-api-key", api_key),) if api_key else ()

    def link_vehicle_to_meter(self, vehicle_id: str, meter_id: str, valid_from_ms: int, valid_until_ms: Optional[int] = None) -> None:
        request = fleet.LinkVehicleToMeterRequest(vehicle_id=vehicle_id, meter_id=meter_id, valid_from=timestamp(valid_from_ms))
        if valid_until_ms is not None:
            request.valid_until.CopyFrom(timestamp(valid_until_ms))
        self._fleet.LinkVehicleToMeter(request, metadata=self._metadata, timeout=10)

    def vehicle_performance(self, vehicle_id: str, window_hours: int = 24, window_end_ms: Optional[int] = None) -> fleet.GetVehiclePerformanceResponse:
        request = fleet.GetVehiclePerformanceRequest(vehicle_id=vehicle_id, window_hours=window_hours)
        if window_end_ms is not None:
            request.window_end.CopyFrom(timestamp(window_end_ms))
        return self._fleet.GetVehiclePerformance(request, metadata=self._metadata, timeout=10)

    def live_state(self, device_ids: Sequence[str]) -> list:
        response = self._fleet.GetLiveState(fleet.GetLiveStateRequest(device_ids=list(device_ids)), metadata=self._metadata, timeout=10)
        return list(response.devices)

    def device_health(self, device_id: str, window_hours: int = 24) -> fleet.GetDeviceHealthResponse:
        request = fleet.GetDeviceHealthRequest(device_id=device_id, window_hours=window_hours)
        return self._fleet.GetDeviceHealth(request, metadata=self._metadata, timeout=10)

    def watch(self, device_ids: Sequence[str]) -> "LiveWatch":
        return LiveWatch(self._fleet.WatchLiveState(fleet.WatchLiveStateRequest(device_ids=list(device_ids)), metadata=self._metadata))


class LiveWatch:
    """A WatchLiveState stream read on a thread of its own, so the caller can wait for a change."""

    def __init__(self, call):
        self._call = call
        self._states: "queue.Queue[object]" = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self._call:
                self._states.put(response.device)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self._states.put(error)

    def next_state(self, timeout: float = 10.0) -> fleet.DeviceLiveState:
        """The next state sent, or raises the stream's error; queue.Empty after `timeout`."""
        item = self._states.get(timeout=timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(timeout=5)
