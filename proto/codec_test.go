package proto

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	protobuf "google.golang.org/protobuf/proto"
)

// validMessages returns one valid message of every kind, for device "gw1".
func validMessages() map[Kind]Message {
	return map[Kind]Message{
		KindHello: &Hello{
			ProtocolVersion: ProtocolVersion, DeviceId: "gw1", AgentVersion: "0.1.0",
			Hardware:        &Hardware{Arch: "arm64", Os: "linux", Cores: 4, MemoryBytes: 4 << 30, CpuFlags: []string{"asimddp"}},
			FirmwareProfile: "raspberry-pi-5",
			Backends:        []*Backend{{Name: "tflite", Version: "0.1.0", Available: true, Formats: []string{"tflite"}}},
			Models:          []*InstalledModel{{Name: "vibration", Version: "1.0.0", Format: "tflite", Active: true, Slot: "a"}},
			Labels:          map[string]string{"site": "plant-7"},
			Session:         3,
		},
		KindStatus: &Status{ProtocolVersion: ProtocolVersion, DeviceId: "gw1", State: Status_STATE_ONLINE, Session: 3},
		KindTelemetry: &TelemetryWindow{
			ProtocolVersion: ProtocolVersion, DeviceId: "gw1", Seq: 7, StartUnixMs: 1000, EndUnixMs: 11000,
			Models: []*ModelStats{{
				Name: "vibration", Version: "1.0.0", Requests: 100, Errors: 2, P50Ms: 1.5, P95Ms: 3, P99Ms: 4,
				Latency: &LatencyHistogram{BoundsMs: []float64{1, 2, 5}, Counts: []uint64{10, 80, 9, 1}},
			}},
			Process: &ProcessStats{CpuPercent: 12.5, RssBytes: 20 << 20},
			System:  &SystemStats{MemoryTotalBytes: 4 << 30, HasTemperature: true, TemperatureC: 51},
		},
		KindDesired: &DesiredDeployment{
			ProtocolVersion: ProtocolVersion, DeviceId: "gw1", Generation: 2,
			Models: []*DesiredModel{{Name: "vibration", Version: "2.0.0", Url: "http://127.0.0.1:8080/a/x", Sha256: "ab"}},
		},
		KindJobs:    &JobProgress{ProtocolVersion: ProtocolVersion, DeviceId: "gw1", JobId: "j1", Step: JobProgress_STEP_DOWNLOADING, State: JobProgress_STATE_IN_PROGRESS, Fraction: 0.5},
		KindCommand: &Command{ProtocolVersion: ProtocolVersion, RequestId: "r1", Name: "ping"},
		KindAck:     &Ack{ProtocolVersion: ProtocolVersion, DeviceId: "gw1", RequestId: "r1", Ok: true},
	}
}

func TestDecodeValid(t *testing.T) {
	for k, m := range validMessages() {
		b := MustEncode(m)
		got, err := Decode(k, "gw1", b)
		if err != nil {
			t.Fatalf("Decode(%s): %v", k, err)
		}
		if !protobuf.Equal(got, m) {
			t.Fatalf("Decode(%s) = %v, want %v", k, got, m)
		}
	}
}

func TestEncodeDeterministic(t *testing.T) {
	m := validMessages()[KindHello].(*Hello)
	m.Labels = map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}
	first := string(MustEncode(m))
	for range 20 {
		if string(MustEncode(m)) != first {
			t.Fatal("Encode is not deterministic for a message with a map")
		}
	}
}

// TestDecodeUnknownFields checks that a newer peer's extra fields are
// tolerated: a payload with an unknown field number decodes.
func TestDecodeUnknownFields(t *testing.T) {
	b := MustEncode(validMessages()[KindStatus])
	// field 99, varint 1: tag = 99<<3|0 = 792 = 0x98 0x06
	b = append(b, 0x98, 0x06, 0x01)
	if _, err := DecodeStatus("gw1", b); err != nil {
		t.Fatalf("unknown field rejected: %v", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	mutate := func(k Kind, f func(m Message)) []byte {
		m := validMessages()[k]
		f(m)
		return MustEncode(m)
	}
	cases := []struct {
		name    string
		kind    Kind
		payload []byte
		want    error
		mention string
	}{
		{"empty", KindHello, nil, ErrMalformed, "empty"},
		{"garbage", KindHello, []byte{0xff, 0xff, 0xff}, ErrMalformed, ""},
		{"too large", KindTelemetry, make([]byte, MaxPayloadBytes+1), ErrTooLarge, "limit"},
		{"no version", KindStatus, mutate(KindStatus, func(m Message) { m.(*Status).ProtocolVersion = 0 }), ErrInvalid, "protocol_version"},
		{"future version", KindStatus, mutate(KindStatus, func(m Message) { m.(*Status).ProtocolVersion = ProtocolVersion + 1 }), ErrInvalid, "newer"},
		{"other device", KindHello, mutate(KindHello, func(m Message) { m.(*Hello).DeviceId = "gw2" }), ErrInvalid, "does not match"},
		{"bad state", KindStatus, mutate(KindStatus, func(m Message) { m.(*Status).State = 0 }), ErrInvalid, "state"},
		{"no seq", KindTelemetry, mutate(KindTelemetry, func(m Message) { m.(*TelemetryWindow).Seq = 0 }), ErrInvalid, "seq"},
		{"window backwards", KindTelemetry, mutate(KindTelemetry, func(m Message) { m.(*TelemetryWindow).EndUnixMs = 0 }), ErrInvalid, "before"},
		{"errors > requests", KindTelemetry, mutate(KindTelemetry, func(m Message) { m.(*TelemetryWindow).Models[0].Errors = 101 }), ErrInvalid, "errors"},
		{"NaN latency", KindTelemetry, mutate(KindTelemetry, func(m Message) { m.(*TelemetryWindow).Models[0].P95Ms = math.NaN() }), ErrInvalid, "latency"},
		{"histogram shape", KindTelemetry, mutate(KindTelemetry, func(m Message) { m.(*TelemetryWindow).Models[0].Latency.Counts = []uint64{1} }), ErrInvalid, "counts"},
		{"histogram order", KindTelemetry, mutate(KindTelemetry, func(m Message) { m.(*TelemetryWindow).Models[0].Latency.BoundsMs = []float64{1, 1, 5} }), ErrInvalid, "increasing"},
		{"too many labels", KindHello, mutate(KindHello, func(m Message) {
			for i := range MaxLabels + 1 {
				m.(*Hello).Labels[strings.Repeat("k", i%60+1)+string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
			}
		}), ErrInvalid, "labels"},
		{"long string", KindHello, mutate(KindHello, func(m Message) { m.(*Hello).AgentVersion = strings.Repeat("x", MaxStringLen+1) }), ErrInvalid, "string"},
		{"too many models", KindHello, mutate(KindHello, func(m Message) {
			for range MaxModels {
				m.(*Hello).Models = append(m.(*Hello).Models, &InstalledModel{Name: "m"})
			}
		}), ErrInvalid, "installed models"},
		{"fraction", KindJobs, mutate(KindJobs, func(m Message) { m.(*JobProgress).Fraction = 2 }), ErrInvalid, "fraction"},
		{"command without id", KindCommand, mutate(KindCommand, func(m Message) { m.(*Command).RequestId = "" }), ErrInvalid, "request id"},
		{"desired without version", KindDesired, mutate(KindDesired, func(m Message) { m.(*DesiredDeployment).Models[0].Version = "" }), ErrInvalid, "version"},
		{"wrong type", KindStatus, MustEncode(validMessages()[KindHello]), nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.kind, "gw1", c.payload)
			if err == nil {
				t.Fatalf("Decode accepted a bad %s payload", c.kind)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("Decode error %v does not wrap %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.mention) || !strings.Contains(err.Error(), "gw1") {
				t.Fatalf("Decode error %q should mention %q and the device id", err, c.mention)
			}
		})
	}
}

// TestTestdataPayloads decodes the committed payload table: valid/*.bin must
// decode, malformed/*.bin must not. File names start with the topic kind.
func TestTestdataPayloads(t *testing.T) {
	for _, dir := range []string{"valid", "malformed"} {
		files, err := filepath.Glob(filepath.Join("testdata", dir, "*.bin"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no payloads in testdata/%s (%v)", dir, err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			kind := Kind(strings.SplitN(filepath.Base(f), "-", 2)[0])
			_, err = Decode(kind, "gw1", b)
			if (err == nil) != (dir == "valid") {
				t.Errorf("%s: Decode error = %v", f, err)
			}
		}
	}
}

// FuzzDecode feeds arbitrary bytes to every decoder: none may panic, and a
// payload that decodes must re-encode and decode to the same message.
func FuzzDecode(f *testing.F) {
	kinds := []Kind{KindHello, KindStatus, KindTelemetry, KindDesired, KindJobs, KindCommand, KindAck}
	for i, k := range kinds {
		f.Add(uint8(i), MustEncode(validMessages()[k]))
	}
	for _, dir := range []string{"valid", "malformed"} {
		files, _ := filepath.Glob(filepath.Join("testdata", dir, "*.bin"))
		for _, file := range files {
			if b, err := os.ReadFile(file); err == nil {
				f.Add(uint8(0), b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, payload []byte) {
		k := kinds[int(which)%len(kinds)]
		m, err := Decode(k, "gw1", payload)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Decode error %v wraps no sentinel", err)
			}
			return
		}
		again, err := Decode(k, "gw1", MustEncode(m))
		if err != nil {
			t.Fatalf("re-encoded %s no longer decodes: %v", k, err)
		}
		if !protobuf.Equal(m, again) {
			t.Fatalf("re-encoded %s differs", k)
		}
	})
}
