package agent_test

import (
	"context"
	"log"
	"log/slog"
	"os"
	"os/signal"

	"github.com/edgefleet/edgefleet/agent"
	_ "github.com/edgefleet/edgefleet/agent/runtime/tflite" // the built-in engine
)

// An agent on a gateway: hardware probed, profile matched, the built-in
// TFLite engine, one model served, reporting to the fleet until Ctrl-C.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	a, err := agent.New(agent.Config{
		BrokerURL: "tcp://fleet.example.internal:1883",
		StateDir:  "/var/lib/edgefleet-agent",
		Labels:    map[string]string{"site": "plant-7"},
		Models:    []agent.ModelSpec{{Name: "kws", Version: "1.0.0", Path: "/opt/models/kws.tflite"}},
		Logger:    slog.Default(),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	if err := a.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
