// Package compose holds the Docker Compose deployment of the edgefleet
// server with Mosquitto and an S3-compatible store (compose.yaml and the
// files it mounts). It has no Go API: its test checks those files on
// machines where no container engine runs, and starts Debian's mosquitto
// with mosquitto.conf when it is installed.
package compose
