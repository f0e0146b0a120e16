package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/edgefleet/edgefleet/proto"
)

func TestResolve(t *testing.T) {
	ctx := context.Background()
	r := openTest(t, Options{})
	a := put(t, r, blob("a", 10))
	b := put(t, r, blob("b", 20))
	c := put(t, r, blob("c", 30))
	req := PublishRequest{Version: "2.0.0", Variants: []VariantSpec{
		// Listed first: the publisher prefers the generic int8 build...
		{ID: "generic-int8", Format: "tflite", Precision: "int8", Backend: "tflite", Artifact: a},
		// ...but a build for the device's own profile wins over it.
		{ID: "rpi4-int8", Format: "tflite", Precision: "int8", Backend: "tflite", Profiles: []string{"raspberry-pi-4"}, MinAgentVersion: ">= 0.3.0", Artifact: b},
		{ID: "jetson-fp16", Format: "onnx", Precision: "fp16", Backend: "onnxruntime", Profiles: []string{"jetson-orin-nano"}, Artifact: c},
	}}
	if _, _, err := r.Publish(ctx, "kws", req); err != nil {
		t.Fatal(err)
	}
	tflite := DeviceBackend{Name: "tflite", Available: true, Formats: []string{"tflite"}}
	ort := DeviceBackend{Name: "onnxruntime", Available: true, Formats: []string{"onnx"}}
	cases := []struct {
		name    string
		d       Device
		want    string   // variant id, or "" for incompatible
		reasons []string // substrings of the incompatibility, in variant order
	}{
		{"rpi4 gets its own build", Device{Profile: "raspberry-pi-4", AgentVersion: "0.3.1", Backends: []DeviceBackend{tflite}}, "rpi4-int8", nil},
		{"rpi4 with an old agent falls back to generic", Device{Profile: "raspberry-pi-4", AgentVersion: "0.2.9", Backends: []DeviceBackend{tflite}}, "generic-int8", nil},
		{"other profile gets generic", Device{Profile: "generic-amd64", AgentVersion: "1.0.0", Backends: []DeviceBackend{tflite, ort}}, "generic-int8", nil},
		{"jetson with both backends gets its build", Device{Profile: "jetson-orin-nano", AgentVersion: "1.0.0", Backends: []DeviceBackend{tflite, ort}}, "jetson-fp16", nil},
		{"jetson without onnxruntime gets generic", Device{Profile: "jetson-orin-nano", AgentVersion: "1.0.0", Backends: []DeviceBackend{tflite}}, "generic-int8", nil},
		{"no backends", Device{Profile: "raspberry-pi-4", AgentVersion: "1.0.0"}, "", []string{
			"generic-int8: needs backend tflite, which the device does not have",
			"rpi4-int8: needs backend tflite",
			"jetson-fp16: built for firmware profiles jetson-orin-nano, device has raspberry-pi-4; needs backend onnxruntime",
		}},
		{"backend unavailable", Device{Profile: "x", AgentVersion: "1.0.0", Backends: []DeviceBackend{{Name: "tflite", Reason: "libtensorflowlite_c.so not found"}}}, "", []string{
			"generic-int8: needs backend tflite, unavailable on the device (libtensorflowlite_c.so not found)",
		}},
		{"backend without the format", Device{Profile: "x", AgentVersion: "1.0.0", Backends: []DeviceBackend{{Name: "tflite", Available: true, Formats: []string{"onnx"}}}}, "", []string{
			"generic-int8: backend tflite on the device does not run tflite models",
		}},
		{"unparseable agent version", Device{Profile: "raspberry-pi-4", AgentVersion: "dev", Backends: []DeviceBackend{{Name: "tflite", Reason: "off"}}}, "", []string{
			`rpi4-int8: needs backend tflite, unavailable on the device (off); needs agent >= 0.3.0, device reports agent version "dev"`,
		}},
		{"no profile reported", Device{AgentVersion: "1.0.0", Backends: []DeviceBackend{ort}}, "", []string{
			"generic-int8: needs backend tflite",
			"jetson-fp16: built for firmware profiles jetson-orin-nano, device reports no profile",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, va, err := r.Resolve(ctx, "kws", "2.0.0", c.d)
			if c.want != "" {
				if err != nil {
					t.Fatalf("got %v, want %s", err, c.want)
				}
				if va.ID != c.want {
					t.Fatalf("got variant %s, want %s", va.ID, c.want)
				}
				dm := v.DesiredModel(va, "https://fleet.example/"+ArtifactPath(va.Artifact.SHA256), "job-1")
				if _, err := proto.VerifyManifest(r.PublicKey(), dm.GetManifest(), dm.GetSignature()); err != nil {
					t.Fatalf("desired model's manifest: %v", err)
				}
				if dm.GetSha256() != va.Artifact.SHA256 || dm.GetSizeBytes() != va.Artifact.Size || dm.GetBackend() != va.Backend {
					t.Fatalf("desired model %v does not match variant %+v", dm, va)
				}
				return
			}
			var ie *IncompatibleError
			if !errors.As(err, &ie) || !errors.Is(err, ErrIncompatible) {
				t.Fatalf("got %v, %v; want an IncompatibleError", va, err)
			}
			if len(ie.Reasons) != 3 {
				t.Fatalf("%d reasons, want one per variant: %v", len(ie.Reasons), err)
			}
			for _, want := range c.reasons {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("reason %q missing from %q", want, err)
				}
			}
		})
	}
	if _, _, err := r.Resolve(ctx, "kws", "9.9.9", Device{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing version: %v", err)
	}
}

func TestDeviceFromHello(t *testing.T) {
	h := &proto.Hello{FirmwareProfile: "raspberry-pi-4", AgentVersion: "0.4.0", Backends: []*proto.Backend{
		{Name: "tflite", Available: true, Formats: []string{"tflite"}},
		{Name: "onnxruntime", Reason: "no cgo"},
	}}
	d := DeviceFromHello(h)
	if d.Profile != "raspberry-pi-4" || d.AgentVersion != "0.4.0" || len(d.Backends) != 2 || d.Backends[1].Reason != "no cgo" || !d.Backends[0].Available {
		t.Fatalf("%+v", d)
	}
}

// BenchmarkResolve is what a rollout pays per device once it holds the
// Version: the cost scales with devices × variants. "uncached" parses the
// constraint and agent version on every call, as Resolve did before the
// parse caches; compare the two in one run.
func BenchmarkResolve(b *testing.B) {
	v := &Version{Model: "kws", Version: "1.0.0", Variants: []Variant{
		{ID: "jetson", Format: "onnx", Backend: "onnxruntime", Profiles: []string{"jetson-orin-nano"}},
		{ID: "rpi4", Format: "tflite", Backend: "tflite", Profiles: []string{"raspberry-pi-4"}, MinAgentVersion: ">= 0.3.0"},
		{ID: "generic", Format: "tflite", Backend: "tflite"},
	}}
	d := Device{Profile: "raspberry-pi-4", AgentVersion: "0.4.0", Backends: []DeviceBackend{{Name: "tflite", Available: true, Formats: []string{"tflite"}}}}
	run := func(b *testing.B) {
		for b.Loop() {
			va, err := v.Resolve(d)
			if err != nil || va.ID != "rpi4" {
				b.Fatal(va, err)
			}
		}
	}
	b.Run("cached", run)
	b.Run("uncached", func(b *testing.B) {
		savedC, savedV := constraints.limit, agentVersions.limit
		constraints.mu.Lock()
		constraints.limit, constraints.m = 0, nil
		constraints.mu.Unlock()
		agentVersions.mu.Lock()
		agentVersions.limit, agentVersions.m = 0, nil
		agentVersions.mu.Unlock()
		defer func() { constraints.limit, agentVersions.limit = savedC, savedV }()
		run(b)
	})
}

// TestResolveConcurrent runs Resolve from several goroutines, as a rollout
// dispatching in parallel would, over the shared parse caches.
func TestResolveConcurrent(t *testing.T) {
	v := &Version{Model: "kws", Version: "1.0.0", Variants: []Variant{
		{ID: "new-agents", Format: "tflite", Backend: "tflite", MinAgentVersion: ">= 0.5.0, < 2.0.0"},
		{ID: "old-agents", Format: "tflite", Backend: "tflite", MinAgentVersion: "< 0.5.0"},
	}}
	tfl := []DeviceBackend{{Name: "tflite", Available: true}}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				agent := fmt.Sprintf("0.%d.%d", (g+i)%9, i%3)
				want := "old-agents"
				if (g+i)%9 >= 5 {
					want = "new-agents"
				}
				va, err := v.Resolve(Device{AgentVersion: agent, Backends: tfl})
				if err != nil || va.ID != want {
					errs <- fmt.Sprintf("agent %s: got %v %v, want %s", agent, va, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
