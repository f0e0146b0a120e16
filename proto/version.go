// Package proto is the wire protocol between edgefleet agents and the fleet
// server: the protobuf messages (generated from edgefleet.proto), the MQTT
// topic names and the decoders that guard both sides against bad payloads.
// It is the only package the agent and the server share, and it imports
// neither of them.
package proto

// ProtocolVersion is the version of the device protocol this build speaks.
// It travels in every message. A peer accepts any version up to its own and
// ignores fields it does not know. Bump it, with a dated line below, when a
// change would be misread by an older peer.
//
//   - 1 (2026-11-27): hello, status, telemetry windows, desired deployment,
//     job progress, command/ack.
const ProtocolVersion = 1

// MaxPayloadBytes is the largest payload either side decodes. Larger
// payloads are rejected before any parsing. Model bytes never travel over
// MQTT, so every message fits well inside it.
const MaxPayloadBytes = 256 << 10
