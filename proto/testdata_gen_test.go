package proto

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var updateTestdata = flag.Bool("update", false, "rewrite testdata/valid and testdata/malformed")

// TestWriteTestdata rewrites the payload table when run with -update.
func TestWriteTestdata(t *testing.T) {
	if !*updateTestdata {
		t.Skip("run with -update to rewrite testdata")
	}
	write := func(dir, name string, b []byte) {
		if err := os.MkdirAll(filepath.Join("testdata", dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", dir, name+".bin"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for k, m := range validMessages() {
		write("valid", string(k)+"-basic", MustEncode(m))
	}
	write("malformed", "hello-truncated", MustEncode(validMessages()[KindHello])[:20])
	write("malformed", "telemetry-garbage", []byte("{\"json\":\"not protobuf\"}"))
	write("malformed", "status-zero-version", MustEncode(&Status{DeviceId: "gw1", State: Status_STATE_ONLINE}))
	write("malformed", "hello-other-device", MustEncode(&Hello{ProtocolVersion: 1, DeviceId: "gw2"}))
	write("malformed", "telemetry-bad-wiretype", []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
}
