package proto

import (
	"strings"
	"testing"
)

func TestTopicRoundTrip(t *testing.T) {
	for _, k := range []Kind{KindHello, KindStatus, KindTelemetry, KindDesired, KindJobs, KindCommand, KindAck} {
		topic := Topic("gw-0001.plant_7", k)
		id, got, err := ParseTopic(topic)
		if err != nil {
			t.Fatalf("ParseTopic(%q): %v", topic, err)
		}
		if id != "gw-0001.plant_7" || got != k {
			t.Fatalf("ParseTopic(%q) = %q, %q", topic, id, got)
		}
	}
}

func TestParseTopicRejects(t *testing.T) {
	for _, topic := range []string{
		"",
		"edgefleet/v1/devices/",
		"edgefleet/v1/devices/gw1",
		"edgefleet/v1/devices/gw1/",
		"edgefleet/v1/devices/gw1/unknown",
		"edgefleet/v1/devices/gw1/hello/extra",
		"edgefleet/v1/devices/+/hello",
		"edgefleet/v1/devices/#/hello",
		"edgefleet/v1/devices//hello",
		"edgefleet/v2/devices/gw1/hello",
		"other/gw1/hello",
		"edgefleet/v1/devices/" + strings.Repeat("a", MaxDeviceIDLen+1) + "/hello",
	} {
		if _, _, err := ParseTopic(topic); err == nil {
			t.Errorf("ParseTopic(%q) accepted an invalid topic", topic)
		}
	}
}

func TestValidateDeviceID(t *testing.T) {
	good := []string{"a", "gw-1", "GW_1.x", strings.Repeat("z", MaxDeviceIDLen)}
	bad := []string{"", ".hidden", "-x", "a/b", "a+b", "a#", "a b", "ü", strings.Repeat("z", MaxDeviceIDLen+1)}
	for _, id := range good {
		if err := ValidateDeviceID(id); err != nil {
			t.Errorf("ValidateDeviceID(%q) = %v, want nil", id, err)
		}
	}
	for _, id := range bad {
		if err := ValidateDeviceID(id); err == nil {
			t.Errorf("ValidateDeviceID(%q) = nil, want an error", id)
		}
	}
}

func TestSubscriptions(t *testing.T) {
	if got, want := Subscription(KindTelemetry), "edgefleet/v1/devices/+/telemetry"; got != want {
		t.Errorf("Subscription = %q, want %q", got, want)
	}
	if got, want := SharedSubscription("fleet", KindHello), "$share/fleet/edgefleet/v1/devices/+/hello"; got != want {
		t.Errorf("SharedSubscription = %q, want %q", got, want)
	}
	if KindDesired.FromDevice() || KindCommand.FromDevice() || !KindTelemetry.FromDevice() {
		t.Error("FromDevice direction table is wrong")
	}
}
