package state_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/agent/state/statetest"
	"github.com/edgefleet/edgefleet/proto"
)

type deployStore interface {
	Deployments(ctx context.Context) ([]state.Deployment, error)
	PutDeployment(ctx context.Context, d state.Deployment) error
	Desired(ctx context.Context) (*proto.DesiredDeployment, error)
	PutDesired(ctx context.Context, d *proto.DesiredDeployment) error
}

func TestDeployments(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for name, open := range map[string]func() deployStore{
		"memory": func() deployStore { return state.NewMemory() },
		"bolt":   func() deployStore { return statetest.OpenBolt(t, "") },
	} {
		t.Run(name, func(t *testing.T) {
			s := open()
			if ds, err := s.Deployments(ctx); err != nil || len(ds) != 0 {
				t.Fatalf("empty store: %v %v", ds, err)
			}
			if d, err := s.Desired(ctx); err != nil || d != nil {
				t.Fatalf("empty store desired: %v %v", d, err)
			}
			want := state.Deployment{Name: "kws", Active: "b",
				Slots: map[string]state.Slot{"b": {Version: "2.0.0", Format: "tflite", Backend: "tflite", SHA256: "ab", Size: 3}},
				Job:   state.Job{ID: "j", Generation: 4, Version: "2.0.0", Step: 7, State: 1, Target: "b", Previous: "a", HadPrevious: true}}
			for _, d := range []state.Deployment{{Name: "z"}, want, {Name: "a"}} {
				if err := s.PutDeployment(ctx, d); err != nil {
					t.Fatal(err)
				}
			}
			ds, err := s.Deployments(ctx)
			if err != nil || len(ds) != 3 || ds[0].Name != "a" || ds[2].Name != "z" || !reflect.DeepEqual(ds[1], want) {
				t.Fatalf("deployments %+v, %v", ds, err)
			}
			if err := s.PutDeployment(ctx, state.Deployment{}); !errors.Is(err, state.ErrCorrupt) {
				t.Errorf("nameless deployment: %v", err)
			}
			for i := 0; i < state.MaxModels; i++ {
				err = s.PutDeployment(ctx, state.Deployment{Name: fmt.Sprintf("m%03d", i)})
			}
			if !errors.Is(err, state.ErrTooMany) {
				t.Errorf("deployments past MaxModels: %v", err)
			}
			d := &proto.DesiredDeployment{ProtocolVersion: proto.ProtocolVersion, DeviceId: "gw-1", Generation: 9}
			if err := s.PutDesired(ctx, d); err != nil {
				t.Fatal(err)
			}
			d.Generation = 10 // the store keeps its own copy
			if got, err := s.Desired(ctx); err != nil || got.GetGeneration() != 9 {
				t.Errorf("desired %v, %v", got, err)
			}
		})
	}
	t.Run("bolt persists", func(t *testing.T) {
		b, err := state.OpenBolt(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.PutDeployment(ctx, state.Deployment{Name: "kws", Active: "a"}); err != nil {
			t.Fatal(err)
		}
		if err := b.PutDesired(ctx, &proto.DesiredDeployment{DeviceId: "gw-1", Generation: 3}); err != nil {
			t.Fatal(err)
		}
		b.Close()
		b = statetest.OpenBolt(t, dir)
		ds, err := b.Deployments(ctx)
		if err != nil || len(ds) != 1 || ds[0].Active != "a" {
			t.Errorf("after reopen %+v %v", ds, err)
		}
		if d, err := b.Desired(ctx); err != nil || d.GetGeneration() != 3 {
			t.Errorf("after reopen desired %v %v", d, err)
		}
	})
}
