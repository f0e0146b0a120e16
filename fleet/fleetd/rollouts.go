package fleetd

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/edgefleet/edgefleet/fleet/auth"
	"github.com/edgefleet/edgefleet/fleet/registry"
	"github.com/edgefleet/edgefleet/fleet/rollout"
)

// ingest is the broker's handler: the inventory, and once the rollout
// engine exists, the engine wrapped around it (it reads telemetry and job
// progress after the inventory accepted them). The broker is built before
// the engine, which publishes through it.
type ingest struct {
	h atomic.Value // rollout.MessageHandler
}

func (in *ingest) Handle(ctx context.Context, clientID, topic string, payload []byte) error {
	h, _ := in.h.Load().(rollout.MessageHandler)
	if h == nil {
		// The broker starts in Run, after New stored the handler; a message
		// before that is refused unacknowledged, and the device resends it.
		return ErrNotRunning
	}
	return h.Handle(ctx, clientID, topic, payload)
}

// openRollouts opens the model registry and the rollout engine in the data
// dir and mounts their routes.
func (s *Server) openRollouts(ctx context.Context, mux *http.ServeMux) error {
	var err error
	s.reg, err = registry.Open(registry.Options{DataDir: s.cfg.DataDir, Logger: s.log.With("component", "registry")})
	if err != nil {
		return err
	}
	base := s.cfg.PublicURL
	if base == "" {
		base = s.HTTPURL()
	}
	s.rollouts, err = rollout.Open(ctx, rollout.Options{
		Path: filepath.Join(s.cfg.DataDir, "rollout.db"), Devices: s.inv, Models: s.reg, Publisher: s.broker,
		ArtifactBaseURL: base, Tick: s.cfg.RolloutTick, Logger: s.log.With("component", "rollout"),
		User: func(ctx context.Context) string {
			id, _ := auth.FromContext(ctx)
			return id.User
		},
	})
	if err != nil {
		return err
	}
	s.ingest.h.Store(rollout.MessageHandler(s.rollouts.Ingest(s.inv)))
	s.reg.Register(mux)
	s.rollouts.Register(mux)
	return nil
}

// Registry is the server's model registry.
func (s *Server) Registry() *registry.Registry { return s.reg }

// Rollouts is the server's rollout engine.
func (s *Server) Rollouts() *rollout.Engine { return s.rollouts }

func registryUpload(r *http.Request) bool {
	return r.Method == http.MethodPost && (r.URL.Path == "/api/v1/artifacts" || strings.HasPrefix(r.URL.Path, "/api/v1/models/"))
}
