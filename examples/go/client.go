// A wattstream client in Go, over grpc-go and stubs generated from proto/ (README.md beside this
// file says how).
//
// What a device must do to never lose a reading, and what Device does:
//   - keep every reading until the service has settled it: stored (accepted), stored before
//     (duplicates), or rejected for good (a rejection without Retryable);
//   - resend, with the same event_id, whatever a failed call carried and every reading rejected as
//     Retryable (another call is storing it right now) — the service counts a reading it already
//     has as a duplicate, so resending is always safe;
//   - wait before resending: the service's grpc-retry-pushback-ms when it sends one, else an
//     exponential backoff with jitter.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	mathrand "math/rand"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "wattstream.example/gen/wattstream/fleet/v1"
	telemetryv1 "wattstream.example/gen/wattstream/telemetry/v1"
)

// retryableCodes are the codes after which the same readings may be sent again; every other code
// is final (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED: fix the call, do not repeat it).
var retryableCodes = map[codes.Code]bool{codes.Unavailable: true, codes.ResourceExhausted: true, codes.Aborted: true}

// Dial opens a connection to the service: TLS when given the PEM file of the CA that signed the
// service's certificate, else h2c (cleartext HTTP/2).
func Dial(target, caFile string) (*grpc.ClientConn, error) {
	if caFile == "" {
		return grpc.Dial(target, grpc.WithInsecure())
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	return grpc.Dial(target, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})))
}

// NewEventID is a fresh random event id; a resend must reuse the reading's own.
func NewEventID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func MeterReading(deviceID string, observed time.Time, kwhConsumedAC, voltage float64) *telemetryv1.Reading {
	return &telemetryv1.Reading{
		EventId: NewEventID(), DeviceId: deviceID, ObservedAt: timestamppb.New(observed),
		Sample: &telemetryv1.Reading_Meter{Meter: &telemetryv1.MeterSample{KwhConsumedAc: kwhConsumedAC, Voltage: voltage}},
	}
}

func VehicleReading(deviceID string, observed time.Time, soc, kwhDeliveredDC, batteryTemp float64) *telemetryv1.Reading {
	return &telemetryv1.Reading{
		EventId: NewEventID(), DeviceId: deviceID, ObservedAt: timestamppb.New(observed),
		Sample: &telemetryv1.Reading_Vehicle{Vehicle: &telemetryv1.VehicleSample{Soc: soc, KwhDeliveredDc: kwhDeliveredDC, BatteryTemp: batteryTemp}},
	}
}

func BatteryReading(deviceID string, observed time.Time, voltage, temperature float64, errorCodes ...string) *telemetryv1.Reading {
	return &telemetryv1.Reading{
		EventId: NewEventID(), DeviceId: deviceID, ObservedAt: timestamppb.New(observed),
		Sample: &telemetryv1.Reading_Battery{Battery: &telemetryv1.BatterySample{Voltage: voltage, Temperature: temperature, ErrorCodes: errorCodes}},
	}
}

// SendResult is what became of a device's readings once every one of them is settled.
type SendResult struct {
	Accepted, Duplicates uint64
	// Rejected holds the rejections for good (the reading is wrong; sending it again will not help).
	Rejected []*telemetryv1.RejectedReading
	// Calls counts the calls made, the first one included.
	Calls int
}

// RetriesExhaustedError says readings were still unsettled after the last attempt; the device
// keeps them and tries later.
type RetriesExhaustedError struct {
	Unsettled []*telemetryv1.Reading
	LastError error
}

func (e *RetriesExhaustedError) Error() string {
	return fmt.Sprintf("%d readings not settled after the last attempt: %v", len(e.Unsettled), e.LastError)
}

// retryDelay is the service's pushback when it sent one, else exponential backoff with full jitter.
func retryDelay(trailer metadata.MD, attempt int) time.Duration {
	if values := trailer.Get("grpc-retry-pushback-ms"); len(values) > 0 {
		if ms, err := strconv.Atoi(values[0]); err == nil && ms >= 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	ceiling := 200 * time.Millisecond << uint(attempt)
	if ceiling > 10*time.Second || ceiling <= 0 {
		ceiling = 10 * time.Second
	}
	return time.Duration(mathrand.Int63n(int64(ceiling)))
}

// Device is one device's sending side, authenticated with its own token when the service asks
// for one.
type Device struct {
	ID          string
	ingest      telemetryv1.IngestServiceClient
	token       string
	MaxAttempts int
}

func NewDevice(conn *grpc.ClientConn, id, token string) *Device {
	return &Device{ID: id, ingest: telemetryv1.NewIngestServiceClient(conn), token: token, MaxAttempts: 8}
}

func (d *Device) context(ctx context.Context) context.Context {
	if d.token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d.token)
}

// Send streams the readings (StreamReadings, perMessage to a message) until each is settled.
func (d *Device) Send(ctx context.Context, readings []*telemetryv1.Reading, perMessage int) (*SendResult, error) {
	result := &SendResult{}
	outbox := readings
	var lastErr error
	var trailer metadata.MD
	for attempt := 0; attempt < d.MaxAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(retryDelay(trailer, attempt)):
			case <-ctx.Done():
				return result, ctx.Err()
			}
		}
		result.Calls++
		response, callTrailer, err := d.streamOnce(ctx, outbox, perMessage)
		trailer = callTrailer
		if err != nil {
			if !retryableCodes[status.Code(err)] {
				return result, err
			}
			// Some of the call's readings may be stored already: the resend counts them as
			// duplicates, so nothing is lost and nothing is stored twice.
			lastErr = err
			continue
		}
		result.Accepted += response.Accepted
		result.Duplicates += response.Duplicates
		var again []*telemetryv1.Reading
		for _, rejection := range response.Rejected {
			if rejection.Retryable {
				// Index counts across the call's messages, so it indexes the outbox as sent.
				again = append(again, outbox[rejection.Index])
			} else {
				result.Rejected = append(result.Rejected, rejection)
			}
		}
		if len(again) == 0 {
			return result, nil
		}
		outbox, lastErr, trailer = again, nil, nil
	}
	return result, &RetriesExhaustedError{Unsettled: outbox, LastError: lastErr}
}

func (d *Device) streamOnce(ctx context.Context, readings []*telemetryv1.Reading, perMessage int) (*telemetryv1.StreamReadingsResponse, metadata.MD, error) {
	ctx, cancel := context.WithTimeout(d.context(ctx), 30*time.Second)
	defer cancel()
	stream, err := d.ingest.StreamReadings(ctx)
	if err != nil {
		return nil, nil, err
	}
	for from := 0; from < len(readings); from += perMessage {
		to := from + perMessage
		if to > len(readings) {
			to = len(readings)
		}
		// An error here means the call is over; CloseAndRecv reports why.
		if err := stream.Send(&telemetryv1.StreamReadingsRequest{Readings: readings[from:to]}); err != nil {
			break
		}
	}
	response, err := stream.CloseAndRecv()
	return response, stream.Trailer(), err
}

// Sync sends each batch on one SyncReadings stream, waiting for the service to acknowledge it
// before sending the next, as firmware that keeps one stream open does; it returns the responses.
// The stream stays open throughout: Acknowledged counts the stream's settled readings from the
// first, so a device drops exactly those from its outbox without closing the stream.
func (d *Device) Sync(ctx context.Context, batches [][]*telemetryv1.Reading) ([]*telemetryv1.SyncReadingsResponse, error) {
	ctx, cancel := context.WithTimeout(d.context(ctx), 30*time.Second)
	defer cancel()
	stream, err := d.ingest.SyncReadings(ctx)
	if err != nil {
		return nil, err
	}
	var responses []*telemetryv1.SyncReadingsResponse
	var sent uint64
	for _, batch := range batches {
		if err := stream.Send(&telemetryv1.SyncReadingsRequest{Readings: batch}); err != nil {
			return responses, err
		}
		sent += uint64(len(batch))
		for len(responses) == 0 || responses[len(responses)-1].Acknowledged < sent {
			response, err := stream.Recv()
			if err != nil {
				return responses, fmt.Errorf("the stream ended before readings up to %d were acknowledged: %w", sent, err)
			}
			responses = append(responses, response)
		}
	}
	if err := stream.CloseSend(); err != nil {
		return responses, err
	}
	// The stream ends once the service has answered everything sent on it.
	for {
		response, err := stream.Recv()
		if err == io.EOF {
			return responses, nil
		}
		if err != nil {
			return responses, err
		}
		responses = append(responses, response)
	}
}

// Fleet is the operator's side: FleetService, authenticated with an operator key when asked for one.
type Fleet struct {
	fleet  fleetv1.FleetServiceClient
	apiKey string
}

func NewFleet(conn *grpc.ClientConn, apiKey string) *Fleet {
	return &Fleet{fleet: fleetv1.NewFleetServiceClient(conn), apiKey: apiKey}
}

func (f *Fleet) context(ctx context.Context) context.Context {
	if f.apiKey == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "x-api-key", f.apiKey)
}

func (f *Fleet) LinkVehicleToMeter(ctx context.Context, vehicleID, meterID string, validFrom time.Time) error {
	ctx, cancel := context.WithTimeout(f.context(ctx), 10*time.Second)
	defer cancel()
	_, err := f.fleet.LinkVehicleToMeter(ctx, &fleetv1.LinkVehicleToMeterRequest{VehicleId: vehicleID, MeterId: meterID, ValidFrom: timestamppb.New(validFrom)})
	return err
}

// VehiclePerformance asks for the vehicle's charging efficiency over windowHours ending at windowEnd
// (the zero time: the start of the current minute).
func (f *Fleet) VehiclePerformance(ctx context.Context, vehicleID string, windowHours uint32, windowEnd time.Time) (*fleetv1.GetVehiclePerformanceResponse, error) {
	ctx, cancel := context.WithTimeout(f.context(ctx), 10*time.Second)
	defer cancel()
	request := &fleetv1.GetVehiclePerformanceRequest{VehicleId: vehicleID, WindowHours: windowHours}
	if !windowEnd.IsZero() {
		request.WindowEnd = timestamppb.New(windowEnd)
	}
	return f.fleet.GetVehiclePerformance(ctx, request)
}

func (f *Fleet) LiveState(ctx context.Context, deviceIDs []string) ([]*fleetv1.DeviceLiveState, error) {
	ctx, cancel := context.WithTimeout(f.context(ctx), 10*time.Second)
	defer cancel()
	response, err := f.fleet.GetLiveState(ctx, &fleetv1.GetLiveStateRequest{DeviceIds: deviceIDs})
	if err != nil {
		return nil, err
	}
	return response.Devices, nil
}

func (f *Fleet) DeviceHealth(ctx context.Context, deviceID string, windowHours uint32) (*fleetv1.GetDeviceHealthResponse, error) {
	ctx, cancel := context.WithTimeout(f.context(ctx), 10*time.Second)
	defer cancel()
	return f.fleet.GetDeviceHealth(ctx, &fleetv1.GetDeviceHealthRequest{DeviceId: deviceID, WindowHours: windowHours})
}

// LiveWatch is a WatchLiveState stream read on a goroutine of its own, so the caller can wait for
// the next state with a timeout.
type LiveWatch struct {
	cancel context.CancelFunc
	states chan *fleetv1.DeviceLiveState
	err    chan error
}

func (f *Fleet) Watch(ctx context.Context, deviceIDs []string) (*LiveWatch, error) {
	ctx, cancel := context.WithCancel(f.context(ctx))
	stream, err := f.fleet.WatchLiveState(ctx, &fleetv1.WatchLiveStateRequest{DeviceIds: deviceIDs})
	if err != nil {
		cancel()
		return nil, err
	}
	watch := &LiveWatch{cancel: cancel, states: make(chan *fleetv1.DeviceLiveState, 64), err: make(chan error, 1)}
	go func() {
		for {
			response, err := stream.Recv()
			if err != nil {
				watch.err <- err
				return
			}
			watch.states <- response.Device
		}
	}()
	return watch, nil
}

// Next answers the next state sent, the stream's error, or an error after timeout.
func (w *LiveWatch) Next(timeout time.Duration) (*fleetv1.DeviceLiveState, error) {
	select {
	case state := <-w.states:
		return state, nil
	case err := <-w.err:
		return nil, err
	case <-time.After(timeout):
		return nil, fmt.Errorf("no state within %v", timeout)
	}
}

func (w *LiveWatch) Close() { w.cancel() }
