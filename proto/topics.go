package proto

import (
	"fmt"
	"strings"
)

// TopicPrefix is the versioned root of every edgefleet topic.
const TopicPrefix = "edgefleet/v1/devices/"

// Kind is the last level of a device topic: what the message on it is.
type Kind string

// The kinds of device topic. Direction, QoS and retain flags are in
// docs/protocol.md.
const (
	KindHello     Kind = "hello"     // device → fleet, QoS 1
	KindStatus    Kind = "status"    // device → fleet, QoS 1, retained; also the last will
	KindTelemetry Kind = "telemetry" // device → fleet, QoS 1
	KindDesired   Kind = "desired"   // fleet → device, QoS 1, retained
	KindJobs      Kind = "jobs"      // device → fleet, QoS 1
	KindCommand   Kind = "cmd"       // fleet → device, QoS 1
	KindAck       Kind = "ack"       // device → fleet, QoS 1
)

var kinds = map[Kind]bool{
	KindHello: true, KindStatus: true, KindTelemetry: true, KindDesired: true,
	KindJobs: true, KindCommand: true, KindAck: true,
}

// FromDevice reports whether devices publish on topics of this kind.
func (k Kind) FromDevice() bool {
	return k != KindDesired && k != KindCommand
}

// MaxDeviceIDLen bounds device ids, so ids fit in topics, keys and logs.
const MaxDeviceIDLen = 128

// ValidateDeviceID reports whether id can name a device: 1 to 128 bytes of
// ASCII letters, digits, '-', '_' and '.', not starting with '.' or '-'.
// MQTT wildcards and separators can never appear in one.
func ValidateDeviceID(id string) error {
	if id == "" {
		return fmt.Errorf("device id is empty")
	}
	if len(id) > MaxDeviceIDLen {
		return fmt.Errorf("device id is %d bytes long, more than the limit of %d", len(id), MaxDeviceIDLen)
	}
	if id[0] == '.' || id[0] == '-' {
		return fmt.Errorf("device id %q starts with %q", id, id[0])
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return fmt.Errorf("device id %q has %q at byte %d; allowed are letters, digits, '-', '_' and '.'", id, c, i)
		}
	}
	return nil
}

// Topic returns the topic of the given kind for a device. The id must be
// valid (ValidateDeviceID); Topic does not check it.
func Topic(deviceID string, k Kind) string {
	return TopicPrefix + deviceID + "/" + string(k)
}

// Subscription returns the filter matching the given kind for every device.
func Subscription(k Kind) string {
	return TopicPrefix + "+/" + string(k)
}

// SharedSubscription returns Subscription(k) inside a shared-subscription
// group, so several fleet servers split one stream of device messages.
func SharedSubscription(group string, k Kind) string {
	return "$share/" + group + "/" + Subscription(k)
}

// ParseTopic splits a device topic into its device id and kind. It rejects
// topics outside the prefix, unknown kinds and invalid device ids.
func ParseTopic(topic string) (deviceID string, k Kind, err error) {
	rest, ok := strings.CutPrefix(topic, TopicPrefix)
	if !ok {
		return "", "", fmt.Errorf("topic %q is not under %q", topic, TopicPrefix)
	}
	id, kind, ok := strings.Cut(rest, "/")
	if !ok || strings.Contains(kind, "/") {
		return "", "", fmt.Errorf("topic %q is not of the form %s{device}/{kind}", topic, TopicPrefix)
	}
	if err := ValidateDeviceID(id); err != nil {
		return "", "", fmt.Errorf("topic %q: %w", topic, err)
	}
	if !kinds[Kind(kind)] {
		return "", "", fmt.Errorf("topic %q: unknown kind %q", topic, kind)
	}
	return id, Kind(kind), nil
}
