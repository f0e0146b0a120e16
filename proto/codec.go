package proto

import (
	"fmt"

	protobuf "google.golang.org/protobuf/proto"
)

// Limits on what a decoded message may hold. They bound the memory and
// storage a single device can make the other side spend.
const (
	MaxLabels         = 64
	MaxLabelKeyLen    = 63
	MaxLabelValueLen  = 256
	MaxModels         = 64
	MaxBackends       = 16
	MaxStringLen      = 1024
	MaxHistogramSlots = 128
	MaxCPUFlags       = 64
	MaxAccelerators   = 32
)

// Message is any message of this protocol.
type Message = protobuf.Message

// Encode marshals m deterministically (map fields in key order), so equal
// messages have equal bytes.
func Encode(m Message) ([]byte, error) {
	b, err := protobuf.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", m, err)
	}
	return b, nil
}

// MustEncode is Encode for messages built by this process, which cannot fail
// to marshal.
func MustEncode(m Message) []byte {
	b, err := Encode(m)
	if err != nil {
		panic(err)
	}
	return b
}

// NewMessage returns an empty message of the type carried on topics of kind k.
func NewMessage(k Kind) (Message, error) {
	switch k {
	case KindHello:
		return &Hello{}, nil
	case KindStatus:
		return &Status{}, nil
	case KindTelemetry:
		return &TelemetryWindow{}, nil
	case KindDesired:
		return &DesiredDeployment{}, nil
	case KindJobs:
		return &JobProgress{}, nil
	case KindCommand:
		return &Command{}, nil
	case KindAck:
		return &Ack{}, nil
	}
	return nil, fmt.Errorf("%w: no message for topic kind %q", ErrInvalid, k)
}

// Decode parses the payload of a message on a topic of kind k sent by or to
// deviceID, and checks it against the protocol's rules. Every error wraps
// ErrTooLarge, ErrMalformed or ErrInvalid and says what was wrong.
// Unknown fields are kept and ignored.
func Decode(k Kind, deviceID string, payload []byte) (Message, error) {
	m, err := NewMessage(k)
	if err != nil {
		return nil, err
	}
	if err := decodeInto(m, payload); err != nil {
		return nil, fmt.Errorf("%s from %s: %w", k, deviceID, err)
	}
	if err := validate(m, deviceID); err != nil {
		return nil, fmt.Errorf("%s from %s: %w", k, deviceID, err)
	}
	return m, nil
}

func decodeInto(m Message, payload []byte) error {
	if len(payload) > MaxPayloadBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(payload), MaxPayloadBytes)
	}
	if len(payload) == 0 {
		return fmt.Errorf("%w: empty payload", ErrMalformed)
	}
	if err := (protobuf.UnmarshalOptions{RecursionLimit: 16}).Unmarshal(payload, m); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// DecodeHello decodes and validates a Hello from deviceID.
func DecodeHello(deviceID string, b []byte) (*Hello, error) {
	return decodeAs[*Hello](KindHello, deviceID, b)
}

// DecodeStatus decodes and validates a Status from deviceID.
func DecodeStatus(deviceID string, b []byte) (*Status, error) {
	return decodeAs[*Status](KindStatus, deviceID, b)
}

// DecodeTelemetry decodes and validates a TelemetryWindow from deviceID.
func DecodeTelemetry(deviceID string, b []byte) (*TelemetryWindow, error) {
	return decodeAs[*TelemetryWindow](KindTelemetry, deviceID, b)
}

// DecodeDesired decodes and validates a DesiredDeployment for deviceID.
func DecodeDesired(deviceID string, b []byte) (*DesiredDeployment, error) {
	return decodeAs[*DesiredDeployment](KindDesired, deviceID, b)
}

// DecodeJobProgress decodes and validates a JobProgress from deviceID.
func DecodeJobProgress(deviceID string, b []byte) (*JobProgress, error) {
	return decodeAs[*JobProgress](KindJobs, deviceID, b)
}

// DecodeCommand decodes and validates a Command for deviceID.
func DecodeCommand(deviceID string, b []byte) (*Command, error) {
	return decodeAs[*Command](KindCommand, deviceID, b)
}

// DecodeAck decodes and validates an Ack from deviceID.
func DecodeAck(deviceID string, b []byte) (*Ack, error) { return decodeAs[*Ack](KindAck, deviceID, b) }

func decodeAs[T Message](k Kind, deviceID string, b []byte) (T, error) {
	var zero T
	m, err := Decode(k, deviceID, b)
	if err != nil {
		return zero, err
	}
	return m.(T), nil
}
