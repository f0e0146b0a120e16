//go:build race

package rollout_test

// raceEnabled skips TestScenario under the race detector: a thousand
// devices subscribing while the engine publishes retained desired states
// trip a data race inside mochi itself (TopicsIndex.RetainMessage writes
// a node's retainPath that scanMessages reads without the lock,
// mochi-mqtt/server#200; seen with v2.7.9), which the detector reports
// against whatever test runs. The engine, ingest and HTTP tests run under
// -race; the scenario runs without it.
const raceEnabled = true
