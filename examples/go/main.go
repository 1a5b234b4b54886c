// An hour of one charger, one vehicle and one battery unit, sent and asked about from Go.
//
//	go run . --target localhost:8080   (see README.md beside this file for building)
//
// With authentication on, give the credentials in the environment (never on the command line):
// WATTSTREAM_OPERATOR_KEY (an operator key), and WATTSTREAM_METER_TOKEN, WATTSTREAM_VEHICLE_TOKEN,
// WATTSTREAM_BATTERY_TOKEN (each device's token). --json prints one JSON object of what came back
// instead of the narration (the same object as examples/python/demo.py prints).
//
// What it does, in order: links the vehicle to the meter; streams the meter's hour (150 kWh AC in
// ten readings, one of them NaN, which the service rejects) and sends it again (duplicates, nothing
// stored twice); sends the vehicle's hour (120 kWh DC) on one SyncReadings stream, one batch per
// acknowledgement; watches the vehicle's live state while one more reading arrives; asks for the
// vehicle's charging efficiency (0.80, below the 0.85 threshold: an alert) and the battery unit's
// health; and shows that a call without credentials is refused when authentication is on.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	telemetryv1 "wattstream.example/gen/wattstream/telemetry/v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// asJSON is a message in protobuf's JSON mapping (lowerCamelCase, enums by name, 64-bit integers
// as strings), kept as is inside the report.
func asJSON(message proto.Message) json.RawMessage {
	encoded, err := protojson.Marshal(message)
	if err != nil {
		panic(err)
	}
	return encoded
}

func run() error {
	target := flag.String("target", "localhost:8080", "host:port of the service")
	caFile := flag.String("ca", "", "PEM file of the CA that signed the service's certificate (TLS)")
	runID := flag.String("run", NewEventID()[:8], "suffix of the device ids (go-meter-RUN, …)")
	jsonOut := flag.Bool("json", false, "print one JSON object instead of the narration")
	retryMeter := flag.String("send-with-retries", "", "only send this meter's last 20 minutes (20 readings, 5 to a message) with WATTSTREAM_METER_TOKEN, retrying as a device must, and print what became of them as JSON")
	flag.Parse()

	say := func(format string, args ...interface{}) {
		if !*jsonOut {
			fmt.Printf(format+"\n", args...)
		}
	}
	conn, err := Dial(*target, *caFile)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx := context.Background()
	if *retryMeter != "" {
		return sendWithRetries(ctx, NewDevice(conn, *retryMeter, os.Getenv("WATTSTREAM_METER_TOKEN")))
	}
	meterID, vehicleID, batteryID := "go-meter-"+*runID, "go-ev-"+*runID, "go-bbu-"+*runID
	meter := NewDevice(conn, meterID, os.Getenv("WATTSTREAM_METER_TOKEN"))
	vehicle := NewDevice(conn, vehicleID, os.Getenv("WATTSTREAM_VEHICLE_TOKEN"))
	battery := NewDevice(conn, batteryID, os.Getenv("WATTSTREAM_BATTERY_TOKEN"))
	operator := NewFleet(conn, os.Getenv("WATTSTREAM_OPERATOR_KEY"))
	report := map[string]interface{}{"meter_id": meterID, "vehicle_id": vehicleID, "battery_id": batteryID}

	now := time.Now().Truncate(time.Millisecond)
	start := now.Add(-50 * time.Minute)

	if err := operator.LinkVehicleToMeter(ctx, vehicleID, meterID, now.Add(-120*time.Minute)); err != nil {
		return fmt.Errorf("linking: %w", err)
	}
	say("linked %s to %s", vehicleID, meterID)

	// The meter's hour: ten readings of 15 kWh, and one NaN voltage the service must reject.
	var meterHour []*telemetryv1.Reading
	for i := 0; i < 10; i++ {
		meterHour = append(meterHour, MeterReading(meterID, start.Add(time.Duration(i)*time.Minute), 15, 230+float64(i%3)))
	}
	nan := MeterReading(meterID, start.Add(5*time.Minute+30*time.Second), 1, math.NaN())
	meterHour = append(meterHour[:5], append([]*telemetryv1.Reading{nan}, meterHour[5:]...)...)
	sent, err := meter.Send(ctx, meterHour, 4)
	if err != nil {
		return fmt.Errorf("sending the meter's hour: %w", err)
	}
	resent, err := meter.Send(ctx, meterHour, 4)
	if err != nil {
		return fmt.Errorf("sending the meter's hour again: %w", err)
	}
	rejected := []json.RawMessage{}
	for _, r := range sent.Rejected {
		rejected = append(rejected, asJSON(r))
	}
	report["meter_send"] = map[string]interface{}{"accepted": sent.Accepted, "duplicates": sent.Duplicates, "rejected": rejected}
	report["meter_resend"] = map[string]interface{}{"accepted": resent.Accepted, "duplicates": resent.Duplicates, "rejected": len(resent.Rejected)}
	firstRejection := "-"
	if len(sent.Rejected) > 0 {
		firstRejection = sent.Rejected[0].Message
	}
	say("meter: %d stored, %d rejected (%s); sent again: %d duplicates", sent.Accepted, len(sent.Rejected), firstRejection, resent.Duplicates)

	// The vehicle's hour on one SyncReadings stream, in three batches, each acknowledged before the next.
	var vehicleHour []*telemetryv1.Reading
	for i := 0; i < 10; i++ {
		vehicleHour = append(vehicleHour, VehicleReading(vehicleID, start.Add(time.Duration(i)*time.Minute), 40+4*float64(i), 12, 31))
	}
	responses, err := vehicle.Sync(ctx, [][]*telemetryv1.Reading{vehicleHour[0:4], vehicleHour[4:8], vehicleHour[8:10]})
	if err != nil {
		return fmt.Errorf("syncing the vehicle's hour: %w", err)
	}
	var syncReport []map[string]uint64
	var acknowledged []string
	for _, r := range responses {
		syncReport = append(syncReport, map[string]uint64{"acknowledged": r.Acknowledged, "accepted": r.Accepted, "duplicates": r.Duplicates})
		acknowledged = append(acknowledged, fmt.Sprint(r.Acknowledged))
	}
	report["vehicle_sync"] = syncReport
	say("vehicle: acknowledged %s on one open stream", strings.Join(acknowledged, " → "))

	// The battery unit: three healthy readings.
	var batteryHour []*telemetryv1.Reading
	for i := 0; i < 3; i++ {
		batteryHour = append(batteryHour, BatteryReading(batteryID, start.Add(time.Duration(20*i)*time.Minute), 52, 24))
	}
	batteryResult, err := battery.Send(ctx, batteryHour, 100)
	if err != nil {
		return fmt.Errorf("sending the battery unit's readings: %w", err)
	}
	report["battery_send"] = map[string]uint64{"accepted": batteryResult.Accepted}

	// Watch the vehicle: its current state first, then the change one more reading makes.
	watch, err := operator.Watch(ctx, []string{vehicleID})
	if err != nil {
		return err
	}
	first, err := watch.Next(10 * time.Second)
	if err != nil {
		watch.Close()
		return fmt.Errorf("watching: %w", err)
	}
	latest := VehicleReading(vehicleID, now.Add(-30*time.Second), 85, 0, 33)
	if _, err := vehicle.Send(ctx, []*telemetryv1.Reading{latest}, 100); err != nil {
		watch.Close()
		return err
	}
	changed, err := watch.Next(10 * time.Second)
	watch.Close()
	if err != nil {
		return fmt.Errorf("watching for the change: %w", err)
	}
	report["watch"] = map[string]interface{}{"first": asJSON(first), "changed": asJSON(changed), "latest_event_id": latest.EventId}
	say("watch: %.0f %% → %.0f %% as the reading arrived", first.GetVehicle().GetSoc(), changed.GetVehicle().GetSoc())

	performance, err := operator.VehiclePerformance(ctx, vehicleID, 1, now)
	if err != nil {
		return err
	}
	report["performance"] = asJSON(performance)
	alert := performance.GetAlert().GetMessage()
	if alert == "" {
		alert = "no alert"
	}
	say("efficiency: %g kWh DC / %g kWh AC = %.2f (%s)", performance.TotalKwhDeliveredDc, performance.TotalKwhConsumedAc, performance.EfficiencyRatio, alert)

	health, err := operator.DeviceHealth(ctx, batteryID, 1)
	if err != nil {
		return err
	}
	report["health"] = asJSON(health)
	say("battery: score %d, %s", health.GetLatest().GetHealthScore(), health.GetLatest().GetHealthLevel())

	states, err := operator.LiveState(ctx, []string{meterID, vehicleID, batteryID})
	if err != nil {
		return err
	}
	liveState := []json.RawMessage{}
	for _, s := range states {
		liveState = append(liveState, asJSON(s))
	}
	report["live_state"] = liveState

	// Without credentials: refused when the service has authentication on, answered when it is off.
	if _, err := NewFleet(conn, "").LiveState(ctx, []string{vehicleID}); err != nil {
		report["without_credentials"] = strings.ToUpper(codeName(err))
	} else {
		report["without_credentials"] = "OK"
	}
	say("a call without credentials: %s", report["without_credentials"])

	if *jsonOut {
		return json.NewEncoder(os.Stdout).Encode(report)
	}
	return nil
}

// sendWithRetries sends a meter's last 20 minutes and prints how they were settled: against a
// service that fails calls on purpose, what a device's retries achieve.
func sendWithRetries(ctx context.Context, meter *Device) error {
	now := time.Now().Truncate(time.Millisecond)
	var readings []*telemetryv1.Reading
	for i := 1; i <= 20; i++ {
		readings = append(readings, MeterReading(meter.ID, now.Add(-time.Duration(i)*time.Minute), 1, 230))
	}
	started := time.Now()
	result, err := meter.Send(ctx, readings, 5)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"accepted": result.Accepted, "duplicates": result.Duplicates, "rejected": len(result.Rejected),
		"calls": result.Calls, "seconds": time.Since(started).Seconds(),
	})
}

// codeName is the gRPC status name of err, as the other languages spell it (UNAUTHENTICATED, …).
func codeName(err error) string {
	name := status.Code(err).String()
	var out strings.Builder
	previous := ' '
	for _, r := range name {
		if r >= 'A' && r <= 'Z' && previous >= 'a' && previous <= 'z' {
			out.WriteByte('_')
		}
		out.WriteRune(r)
		previous = r
	}
	return out.String()
}
