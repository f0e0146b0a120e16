package console

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/registry"
)

// maxModelsShown bounds the models page; the API pages through more.
const maxModelsShown = 500

type modelsData struct {
	Off    bool
	Models []registry.Model
}

func (c *Console) modelsPage(w http.ResponseWriter, r *http.Request) {
	if c.models == nil {
		c.render(w, r, http.StatusOK, "models", view{Title: "Models", Nav: "models", Data: modelsData{Off: true}})
		return
	}
	ms, err := c.models.Models(r.Context(), "", maxModelsShown)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "models", view{Title: "Models", Nav: "models", Data: modelsData{Models: ms}})
}

type modelData struct {
	Name     string
	Versions []versionRow
}

type versionRow struct {
	V       registry.Version
	Devices int // devices whose active model is this version
}

func (c *Console) modelPage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if c.models == nil {
		c.message(w, r, http.StatusNotFound, "Models", "This server runs without a model registry.")
		return
	}
	if err := registry.CheckName(name); err != nil {
		c.message(w, r, http.StatusBadRequest, "No such model", "The model name is not valid: "+err.Error())
		return
	}
	ctx := r.Context()
	vs, err := c.models.Versions(ctx, name)
	if errors.Is(err, registry.ErrNotFound) {
		c.message(w, r, http.StatusNotFound, "No such model", fmt.Sprintf("No model named %q is in the registry.", name))
		return
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	// Count devices per active version in one pass over the devices that
	// have the model installed.
	counts := map[string]int{}
	q := inventory.Query{Model: name, Limit: inventory.MaxLimit}
	for scanned := 0; scanned < overviewScanLimit; {
		p, err := c.inv.List(ctx, q)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		for _, d := range p.Devices {
			if am, ok := d.ActiveModel(); ok && am.Name == name {
				counts[am.Version]++
			}
		}
		scanned += len(p.Devices)
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	data := modelData{Name: name}
	for i := len(vs) - 1; i >= 0; i-- { // newest first
		row := versionRow{V: vs[i], Devices: counts[vs[i].Version]}
		data.Versions = append(data.Versions, row)
	}
	c.render(w, r, http.StatusOK, "model", view{Title: "Model " + name, Nav: "models", Data: data})
}
