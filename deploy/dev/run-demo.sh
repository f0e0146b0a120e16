#!/usr/bin/env bash
# `make run`: the fleet server on embedded defaults (MQTT broker, bbolt, local
# artifacts, console) plus a simulator with DEVICES virtual gateways. Ctrl-C
# stops the simulator, then the server, each cleanly; the data dir stays
# consistent for the next run.
set -euo pipefail
bin=$1 data=$2 devices=$3 http=$4 mqtt=$5

server_pid= sim_pid=
stop() {
	trap - INT TERM EXIT
	[ -n "$sim_pid" ] && kill -TERM "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
	[ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
	echo "edgefleet: stopped; data kept in $data"
}
trap stop INT TERM EXIT

mkdir -p "$data"
# A demo operator with a known password and an API token for the CLI; a
# real server gets its first admin from `edgefleet-server init` (or a
# one-time password in its log).
"$bin/edgefleet-server" init --data-dir "$data" --admin demo --password-file <(printf 'edgefleet-demo\n') \
	--exists-ok --token-file "$data/demo.token" >/dev/null
# The server runs in its own session so that Ctrl-C in the terminal reaches
# only the simulator and this script: the devices say goodbye (OFFLINE) to a
# server that is still there, then the trap stops the server.
# --mqtt-auth=off: the demo's simulated devices connect without enrolling.
# A real server keeps the default (required); simulators then enrol with
# edgefleet-sim --enroll-token (docs/enrolment.md).
setsid "$bin/edgefleet-server" --data-dir "$data" --http-addr "$http" --mqtt-addr "$mqtt" --mqtt-auth=off &
server_pid=$!

for _ in $(seq 1 100); do
	if curl -fsS "http://$http/readyz" >/dev/null 2>&1; then break; fi
	if ! kill -0 "$server_pid" 2>/dev/null; then echo "edgefleet-server exited; see its log above" >&2; exit 1; fi
	sleep 0.1
done

# The simulated gateways serve the demo model and apply the updates the fleet
# signs with its registry key. Version 3.0.0 misbehaves on them (30 % errors)
# and 4.0.0 is three times slower, so a rollout of either is caught by the
# gates and rolled back (README, "Roll out a model").
key=$(curl -fsS -H "Authorization: Bearer $(cat "$data/demo.token")" "http://$http/api/v1/signing-key" |
	sed -n 's/.*"public_key":"\([^"]*\)".*/\1/p')
"$bin/edgefleet-sim" --devices "$devices" --server "tcp://$mqtt" --fleet-key "$key" --health-window 20s \
	--telemetry-interval 2s --model vibration-anomaly=1.0.0 \
	--behavior vibration-anomaly@1.0.0=2ms,4ms,0 --behavior vibration-anomaly@2.0.0=2ms,4ms,0 \
	--behavior vibration-anomaly@3.0.0=2ms,4ms,0.3 --behavior vibration-anomaly@4.0.0=6ms,12ms,0 &
sim_pid=$!

cat <<MSG

  edgefleet is running.
    console:  http://$http/   (log in as demo / edgefleet-demo)
    devices:  curl -s -H "Authorization: Bearer \$(cat $data/demo.token)" http://$http/api/v1/devices
    CLI:      export EDGEFLEET_TOKEN=\$(cat $data/demo.token) EDGEFLEET_SERVER=http://$http
              $bin/edgefleet devices
  Ctrl-C stops everything.

MSG
wait -n "$server_pid" "$sim_pid" || true
