package console

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	protobuf "google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/fleet/api"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/proto"
)

var funcs = template.FuncMap{
	"time": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"bytes": func(n uint64) string {
		switch {
		case n >= 1<<30:
			return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
		case n >= 1<<20:
			return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
		case n >= 1<<10:
			return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
		}
		return fmt.Sprintf("%d B", n)
	},
	"num":  num,
	"pct":  func(v float64) string { return num(v*100) + "%" },
	"join": strings.Join,
	"add":  func(a, b int) int { return a + b },
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12] + "…"
		}
		return s
	},
}

// overviewGroups bounds how many groups the overview evaluates: each
// selector group reads the inventory.
const overviewGroups = 20

// overviewScanLimit bounds how many devices the overview counts, so a
// huge fleet costs a bounded page; beyond it the counts say so.
const overviewScanLimit = 100_000

type count struct {
	Key string
	N   int
}

type overviewData struct {
	deviceCounts
	Groups       []count
	GroupsCapped int
	Active       []rolloutRow
	RolloutsOff  bool
}

func sortedCounts(m map[string]int) []count {
	out := make([]count, 0, len(m))
	for k, n := range m {
		out = append(out, count{k, n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].N != out[j].N {
			return out[i].N > out[j].N
		}
		return out[i].Key < out[j].Key
	})
	return out
}

// deviceCounts is the device part of the overview.
type deviceCounts struct {
	Total, Online, Offline int
	Partial                bool
	Profiles, Models       []count
}

// countCache keeps the last device counts: they read every device, and
// each open overview refreshes on every inventory event, so without it
// every open browser would cost a full scan per second. The counts are
// recomputed when the inventory changed and the last ones are older than
// EventInterval; the lock makes concurrent pages share one scan.
type countCache struct {
	mu      sync.Mutex
	valid   bool
	at      time.Time
	changed <-chan struct{}
	counts  deviceCounts
}

func (c *Console) deviceCounts(ctx context.Context) (deviceCounts, error) {
	cc := &c.counts
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.valid {
		select {
		case <-cc.changed:
			if time.Since(cc.at) < c.interval {
				return cc.counts, nil
			}
		default:
			return cc.counts, nil
		}
	}
	changed := c.inv.Changed() // before the scan, so a change during it is not missed
	var d deviceCounts
	profiles, models := map[string]int{}, map[string]int{}
	q := inventory.Query{Limit: inventory.MaxLimit}
	for {
		p, err := c.inv.List(ctx, q)
		if err != nil {
			return d, err
		}
		for _, dev := range p.Devices {
			d.Total++
			if dev.Online {
				d.Online++
			}
			prof := dev.Profile
			if prof == "" {
				prof = "(none)"
			}
			profiles[prof]++
			m := "(none)"
			if am, ok := dev.ActiveModel(); ok {
				m = am.Name + "@" + am.Version
			}
			models[m]++
		}
		if p.Next == "" {
			break
		}
		if d.Total >= overviewScanLimit {
			d.Partial = true
			break
		}
		q.Cursor = p.Next
	}
	d.Offline = d.Total - d.Online
	d.Profiles, d.Models = sortedCounts(profiles), sortedCounts(models)
	cc.valid, cc.at, cc.changed, cc.counts = true, time.Now(), changed, d
	return d, nil
}

func (c *Console) overviewPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	counts, err := c.deviceCounts(ctx)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	d := overviewData{deviceCounts: counts}
	if c.rollouts == nil {
		d.RolloutsOff = true
	} else {
		groups, err := c.rollouts.Groups(ctx)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		for i, g := range groups {
			n := len(g.Devices)
			if i >= overviewGroups {
				d.GroupsCapped = len(groups) - overviewGroups
				break
			}
			if g.Selector != "" {
				ms, err := c.rollouts.Members(ctx, g.Name)
				if err != nil {
					c.log.Warn("evaluate group for the overview", "group", g.Name, "error", err)
					continue
				}
				n = len(ms)
			}
			d.Groups = append(d.Groups, count{g.Name, n})
		}
		rs, err := c.rollouts.List(ctx)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		for _, ro := range rs {
			if ro.State == "running" || ro.State == "paused" || ro.State == "rolling_back" {
				d.Active = append(d.Active, rowOf(ro))
			}
		}
	}
	c.render(w, r, http.StatusOK, "overview", view{Title: "Overview", Nav: "overview", Live: "devices", Data: d})
}

// devicesPageSize is how many devices one page of the list shows.
const devicesPageSize = 100

// searchScanLimit bounds how many devices a search by part of an id
// reads; an exact id goes straight to the device.
const searchScanLimit = 20_000

type devicesData struct {
	Devices  []api.Device
	Online   int
	Next     string // query string of the next page, "" on the last
	Filter   filterForm
	Search   string
	Searched bool
	Capped   bool
}

type filterForm struct {
	Label, Profile, Status, Model string
}

func (f filterForm) values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"label": f.Label, "profile": f.Profile, "status": f.Status, "model": f.Model} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

func (c *Console) devicesPage(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	f := filterForm{Label: strings.TrimSpace(v.Get("label")), Profile: strings.TrimSpace(v.Get("profile")), Status: v.Get("status"), Model: strings.TrimSpace(v.Get("model"))}
	search := strings.TrimSpace(v.Get("q"))
	data := devicesData{Filter: f, Search: search}
	bad := func(msg string) {
		c.render(w, r, http.StatusBadRequest, "devices", view{Title: "Devices", Nav: "devices", Problem: msg, Data: data})
	}
	// The same parser as the API, so the page and the API accept the same
	// filters and answer the same messages.
	qv := f.values()
	if f.Label != "" {
		qv.Del("label")
		for _, l := range strings.Split(f.Label, ",") {
			qv.Add("label", strings.TrimSpace(l))
		}
	}
	if cur := v.Get("cursor"); cur != "" {
		qv.Set("cursor", cur)
	}
	qv.Set("limit", strconv.Itoa(devicesPageSize))
	q, err := api.ParseQuery(qv)
	if err != nil {
		var pe *api.ParamError
		if errors.As(err, &pe) {
			bad(fmt.Sprintf("Filter %s: %s.", pe.Param, pe.Msg))
			return
		}
		bad(err.Error())
		return
	}
	ctx := r.Context()
	if search != "" {
		data.Searched = true
		if len(search) > proto.MaxDeviceIDLen {
			bad(fmt.Sprintf("A device id is at most %d characters.", proto.MaxDeviceIDLen))
			return
		}
		if _, err := c.inv.Device(ctx, search); err == nil {
			http.Redirect(w, r, "/devices/"+url.PathEscape(search), http.StatusSeeOther)
			return
		}
		q.Cursor, q.Limit = "", inventory.MaxLimit
		scanned := 0
		for len(data.Devices) < devicesPageSize {
			p, err := c.inv.List(ctx, q)
			if err != nil {
				c.fail(w, r, err)
				return
			}
			for _, d := range p.Devices {
				if strings.Contains(d.ID, search) && len(data.Devices) < devicesPageSize {
					data.Devices = append(data.Devices, api.DeviceOf(d))
				}
			}
			scanned += len(p.Devices)
			if p.Next == "" {
				break
			}
			if scanned >= searchScanLimit {
				data.Capped = true
				break
			}
			q.Cursor = p.Next
		}
	} else {
		p, err := c.inv.List(ctx, q)
		if errors.Is(err, inventory.ErrBadQuery) {
			bad(err.Error())
			return
		}
		if err != nil {
			c.fail(w, r, err)
			return
		}
		for _, d := range p.Devices {
			data.Devices = append(data.Devices, api.DeviceOf(d))
		}
		if p.Next != "" {
			nv := f.values()
			nv.Set("cursor", p.Next)
			data.Next = nv.Encode()
		}
	}
	for _, d := range data.Devices {
		if d.Status == inventory.StatusOnline {
			data.Online++
		}
	}
	c.render(w, r, http.StatusOK, "devices", view{Title: "Devices", Nav: "devices", Live: "devices", Data: data})
}

type deviceData struct {
	Device  api.Device
	Charts  []LineChart
	Jobs    []jobRow
	Windows int
}

type jobRow struct {
	Rollout, Version, Variant, Step, State, Reason string
	Dispatched                                     time.Time
	RolledBack                                     bool
}

// deviceTelemetryWindows is how many stored windows the charts draw.
const deviceTelemetryWindows = 240

func (c *Console) devicePage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := proto.ValidateDeviceID(id); err != nil {
		c.message(w, r, http.StatusBadRequest, "No such device", "The device id is not valid: "+err.Error())
		return
	}
	ctx := r.Context()
	d, err := c.inv.Device(ctx, id)
	if errors.Is(err, inventory.ErrNotFound) {
		c.message(w, r, http.StatusNotFound, "No such device", fmt.Sprintf("No device with id %q is in the inventory.", id))
		return
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	ws, err := c.inv.Telemetry(ctx, id, deviceTelemetryWindows)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data := deviceData{Device: api.DeviceOf(d), Charts: telemetryCharts(d, ws), Windows: len(ws)}
	if c.rollouts != nil {
		data.Jobs = c.recentJobs(r, id)
	}
	c.render(w, r, http.StatusOK, "device", view{Title: "Device " + id, Nav: "devices", Live: "devices", Data: data})
}

// recentJobs finds the device in the latest rollouts; the engine keeps
// jobs per rollout, so this reads the targets of the last few.
func (c *Console) recentJobs(r *http.Request, id string) []jobRow {
	ctx := r.Context()
	rs, err := c.rollouts.List(ctx)
	if err != nil {
		c.log.Warn("list rollouts for a device page", "error", err)
		return nil
	}
	var out []jobRow
	for i, ro := range rs {
		if i >= 10 {
			break
		}
		ts, err := c.rollouts.Targets(ctx, ro.ID)
		if err != nil {
			continue
		}
		for _, t := range ts {
			if t.Device != id || t.Phase < 0 {
				continue
			}
			out = append(out, jobRow{Rollout: ro.ID, Version: ro.Spec.Model + "@" + ro.Spec.Version, Variant: t.Variant,
				Step: t.JobStep, State: t.JobState, Reason: t.JobReason, Dispatched: t.Dispatched, RolledBack: t.RolledBack})
		}
	}
	return out
}

// telemetryCharts decodes the stored windows and draws latency, error
// rate, requests, CPU and memory over time. Windows are summed over the
// device's models; latency percentiles are the request-weighted mean of
// the models' (exact merging needs the histograms, which are bucketed
// differently per model).
func telemetryCharts(d store.Device, ws []store.Window) []LineChart {
	var ts []time.Time
	var p50, p95, p99, errRate, reqs, cpu, mem []float64
	for _, win := range ws {
		var m proto.TelemetryWindow
		if err := protobuf.Unmarshal(win.Payload, &m); err != nil {
			continue
		}
		t := time.UnixMilli(m.GetEndUnixMs())
		if m.GetEndUnixMs() == 0 {
			t = win.Received
		}
		var n, e uint64
		var w50, w95, w99 float64
		for _, ms := range m.GetModels() {
			n += ms.GetRequests()
			e += ms.GetErrors()
			k := float64(ms.GetRequests())
			w50 += k * ms.GetP50Ms()
			w95 += k * ms.GetP95Ms()
			w99 += k * ms.GetP99Ms()
		}
		nan := math.NaN()
		ts = append(ts, t)
		reqs = append(reqs, float64(n))
		if n > 0 {
			p50 = append(p50, w50/float64(n))
			p95 = append(p95, w95/float64(n))
			p99 = append(p99, w99/float64(n))
			errRate = append(errRate, 100*float64(e)/float64(n))
		} else {
			p50, p95, p99, errRate = append(p50, nan), append(p95, nan), append(p99, nan), append(errRate, nan)
		}
		if m.Process != nil {
			cpu = append(cpu, m.GetProcess().GetCpuPercent())
			mem = append(mem, float64(m.GetProcess().GetRssBytes())/(1<<20))
		} else {
			cpu, mem = append(cpu, nan), append(mem, nan)
		}
	}
	return []LineChart{
		lineChart("Latency", " ms", ts, []string{"p50", "p95", "p99"}, []string{"s1", "s2", "s3"}, [][]float64{p50, p95, p99}, nil),
		lineChart("Error rate", "%", ts, []string{"errors"}, []string{"s3"}, [][]float64{errRate}, nil),
		lineChart("Requests per window", "", ts, []string{"requests"}, []string{"s1"}, [][]float64{reqs}, nil),
		lineChart("Agent CPU", "%", ts, []string{"cpu"}, []string{"s2"}, [][]float64{cpu}, nil),
		lineChart("Agent memory (RSS)", " MiB", ts, []string{"rss"}, []string{"s1"}, [][]float64{mem}, nil),
	}
}
