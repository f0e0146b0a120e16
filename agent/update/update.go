// Package update applies the fleet's desired deployments on a device,
// safely: it verifies the signed manifest with the pinned fleet key,
// downloads the artifact with resume into an A/B slot, checks its sha256
// and size before using a byte, loads it with the backend the variant
// names, runs the self-test, switches the served version atomically and
// watches a health window against the previous version, rolling back by
// itself when the new one does worse. Every step is written to the agent's
// state before it takes effect, so a device killed at any point restarts
// serving a complete, verified model and resumes or finishes the job.
//
// On disk, under the update directory (the agent's StateDir/models):
// slots/<model>.a and slots/<model>.b hold verified artifacts, and
// downloads/<sha256>.part the one download in progress, named by content
// so a restart resumes the same bytes. Slot "a" of a model that was never
// updated is the model the agent was configured with. The state (a
// state.Deployment per model) names what each slot holds only once its
// bytes are verified and in place, and names the active slot before the
// switch, so after a crash the agent serves the slot the state names,
// checking its sha256 again before loading it, and resumes the job from
// its last recorded step.
//
// The agent owns an Updater (agent.Config.FleetKey turns it on); the
// simulator's devices run the same code with simulated backends.
package update

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/proto"
)

// Store is the persistent state the updater needs; state.Bolt and
// state.Memory implement it.
type Store interface {
	Deployments(ctx context.Context) ([]state.Deployment, error)
	PutDeployment(ctx context.Context, d state.Deployment) error
	Desired(ctx context.Context) (*proto.DesiredDeployment, error)
	PutDesired(ctx context.Context, d *proto.DesiredDeployment) error
	SetModels(ctx context.Context, models []state.Model) error
}

// Server serves models; agent.Agent implements it.
type Server interface {
	// ServeModel makes m the served version of name from now on; calls in
	// progress finish on the version they started on. It returns the model
	// it replaced (nil when name was not served) once no call uses it any
	// more; the caller then owns it.
	ServeModel(name, version, backend string, m runtime.Model) (runtime.Model, error)
	// RemoveModel stops serving name and returns its model, as ServeModel.
	RemoveModel(name string) (runtime.Model, error)
	// ServedVersion is the served version of name, if any.
	ServedVersion(name string) (string, bool)
}

// NamedOpener is an optional ability of a runtime.Backend that wants to
// know which model version it opens (the simulated backend takes its
// behaviour from it).
type NamedOpener interface {
	OpenNamed(ctx context.Context, name, version string, data []byte, opts runtime.Options) (runtime.Model, error)
}

// SelfTestExempt is an optional ability of a runtime.Backend whose outputs
// mean nothing (the simulated backend): it returns why the self-test is
// skipped.
type SelfTestExempt interface {
	SkipSelfTest() string
}

// Config is what an Updater is built from.
type Config struct {
	// FleetKey is the pinned ed25519 public key of the fleet server;
	// manifests that do not verify with it are refused.
	FleetKey ed25519.PublicKey
	// Dir holds the A/B slots and partial downloads.
	Dir      string
	DeviceID string
	Store    Store
	Server   Server
	// Backends the device has, preferred first.
	Backends []runtime.Backend
	// Profile is the device's firmware profile; a manifest that lists
	// profiles without it is incompatible.
	Profile string
	// AgentVersion is checked against a manifest's min_agent_version; a
	// version that does not parse (a development build) passes.
	AgentVersion string
	// Base are the installed models the agent was configured with; their
	// entries fill slot "a" of a model until an update writes it.
	Base []state.Model
	// Report publishes job progress; it must not block for long.
	Report func(*proto.JobProgress)
	// Finished, when set, is called when a job ends, before its terminal
	// report, once the installed models are recorded (the agent says hello
	// again).
	Finished func()
	// Health decides about new versions.
	Health HealthPolicy
	// HTTPClient downloads artifacts; default one with connect and header
	// timeouts and no overall timeout (artifacts may be large).
	HTTPClient *http.Client
	// MaxArtifactBytes caps an artifact; default 1 GiB.
	MaxArtifactBytes uint64
	// MinFreeBytes must stay free on Dir's file system after a download;
	// default 16 MiB.
	MinFreeBytes uint64
	// DiskFree reports the free bytes of a directory; default statfs.
	DiskFree func(dir string) (uint64, error)
	// StallTimeout ends a download attempt that received nothing for that
	// long (a connection that stays open but stopped moving); default 60 s.
	StallTimeout time.Duration
	// Retries bounds download attempts without progress; default 5.
	Retries int
	// RetryMin and RetryMax bound the backoff; defaults 200 ms and 10 s.
	RetryMin, RetryMax time.Duration
	// Now and After are the clock; default the system's. After returns a
	// channel that fires once after d and a function that stops it.
	Now   func() time.Time
	After func(d time.Duration) (<-chan time.Time, func() bool)
	// Threads and ArenaLimit are passed to the backend when opening.
	Threads    int
	ArenaLimit int64
	Logger     *slog.Logger
}

// maxSelfTestBytes bounds the self-test tensors of one variant together:
// they are held in memory.
const maxSelfTestBytes = 16 << 20

// Updater applies desired deployments. Build it with New, call Restore
// once before serving, and run it with Run.
type Updater struct {
	cfg    Config
	log    *slog.Logger
	health health
	// ownClient is set when New made the HTTP client: Run closes its idle
	// connections (and their goroutines) when it returns.
	ownClient bool

	mu        sync.Mutex
	latest    *proto.DesiredDeployment // newest received, not yet taken
	seen      uint64                   // newest generation received
	running   uint64                   // generation being applied
	cancelJob context.CancelFunc
	wake      chan struct{}

	// Owned by the Run goroutine: how often the job named last was
	// retried after a failed download, for the backoff between retries.
	retryJob   string
	retryGen   uint64
	retryCount int

	// Owned by the Run goroutine (and Restore before it): held previous
	// versions, kept loaded through a health window.
	held map[string]runtime.Model
}

// New checks cfg and returns an Updater.
func New(cfg Config) (*Updater, error) {
	if len(cfg.FleetKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: fleet public key is %d bytes, want %d", ErrConfig, len(cfg.FleetKey), ed25519.PublicKeySize)
	}
	if cfg.Dir == "" || cfg.Store == nil || cfg.Server == nil {
		return nil, fmt.Errorf("%w: need a directory, a store and a server", ErrConfig)
	}
	if err := cfg.Health.defaults(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Report == nil {
		cfg.Report = func(*proto.JobProgress) {}
	}
	ownClient := cfg.HTTPClient == nil
	if ownClient {
		cfg.HTTPClient = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConns:          2,
			IdleConnTimeout:       30 * time.Second,
		}}
	}
	if cfg.MaxArtifactBytes == 0 {
		cfg.MaxArtifactBytes = 1 << 30
	}
	if cfg.MinFreeBytes == 0 {
		cfg.MinFreeBytes = 16 << 20
	}
	if cfg.DiskFree == nil {
		cfg.DiskFree = freeBytes
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 60 * time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 200 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(10*time.Second, cfg.RetryMin)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		}
	}
	for _, sub := range []string{"slots", "downloads"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("%w: update directory: %v", ErrConfig, err)
		}
	}
	return &Updater{
		cfg: cfg, log: cfg.Logger, ownClient: ownClient,
		health: health{m: map[versionKey]*versionStats{}},
		wake:   make(chan struct{}, 1),
		held:   map[string]runtime.Model{},
	}, nil
}

// Observe records one inference of a model version for the health window.
// The agent calls it for every request.
func (u *Updater) Observe(name, version string, d time.Duration, failed bool) {
	u.health.observe(name, version, d, failed)
}

// Desired hands over a desired deployment received from the fleet. It
// never blocks: the newest one wins, and one newer than the deployment
// being applied interrupts it (a rollback must not wait for a health
// window). Generations older than one already received are ignored. The
// newest generation delivered again (the broker does on every reconnect)
// is taken again once the job in progress ends: a job of it that failed
// for want of its bytes (the fleet server was away) is retried then, after
// a backoff; one that ended with a verdict or succeeded is left as it is.
func (u *Updater) Desired(d *proto.DesiredDeployment) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if d.GetGeneration() < u.seen {
		// Generations only grow; an older one means a server that lost
		// its counter, which the fleet's operators need to hear about.
		u.log.Warn("desired generation older than one already received; ignored", "generation", d.GetGeneration(), "received", u.seen)
		return
	}
	if d.GetGeneration() == 0 {
		return
	}
	u.seen = d.GetGeneration()
	u.latest = d
	if u.cancelJob != nil && d.GetGeneration() > u.running {
		u.cancelJob()
	}
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

func (u *Updater) take() *proto.DesiredDeployment {
	u.mu.Lock()
	defer u.mu.Unlock()
	d := u.latest
	u.latest = nil
	return d
}

// Run applies desired deployments until ctx is done. It first finishes
// the job a restart interrupted. When it returns, models it held are
// closed; a job interrupted by ctx resumes at the next start.
func (u *Updater) Run(ctx context.Context) error {
	defer u.releaseHeld()
	if u.ownClient {
		defer u.cfg.HTTPClient.CloseIdleConnections()
	}
	pending, err := u.cfg.Store.Desired(ctx)
	if err != nil {
		return fmt.Errorf("read desired deployment: %w", err)
	}
	if pending != nil {
		u.mu.Lock()
		u.seen = max(u.seen, pending.GetGeneration())
		u.mu.Unlock()
	}
	for {
		if pending == nil {
			select {
			case <-ctx.Done():
				return nil
			case <-u.wake:
			}
			pending = u.take()
			if pending == nil {
				continue
			}
		}
		jobCtx, cancel := context.WithCancel(ctx)
		u.mu.Lock()
		u.running, u.cancelJob = pending.GetGeneration(), cancel
		u.mu.Unlock()
		u.apply(ctx, jobCtx, pending)
		u.mu.Lock()
		u.cancelJob = nil
		u.mu.Unlock()
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		pending = u.take()
	}
}

func (u *Updater) releaseHeld() {
	for name, m := range u.held {
		if err := m.Close(); err != nil {
			u.log.Warn("closing previous model version", "model", name, "err", err)
		}
		delete(u.held, name)
	}
}

// apply works through one desired deployment, model by model.
func (u *Updater) apply(runCtx, ctx context.Context, d *proto.DesiredDeployment) {
	cur, err := u.cfg.Store.Desired(ctx)
	if err != nil {
		u.log.Error("read desired deployment", "err", err)
		return
	}
	if cur != nil && d.GetGeneration() < cur.GetGeneration() {
		u.log.Info("desired generation older than the applied one; ignored", "generation", d.GetGeneration(), "applied", cur.GetGeneration())
		return
	}
	if cur == nil || d.GetGeneration() > cur.GetGeneration() {
		if err := u.cfg.Store.PutDesired(ctx, d); err != nil {
			u.log.Error("record desired deployment", "err", err)
			return
		}
	} else {
		// A generation delivered again is the one recorded: a repeated
		// generation number never starts other jobs.
		d = cur
	}
	u.log.Info("applying desired deployment", "generation", d.GetGeneration(), "rollout", d.GetRolloutId(), "models", len(d.GetModels()))
	for _, dm := range d.GetModels() {
		if ctx.Err() != nil {
			return
		}
		u.applyModel(runCtx, ctx, d, dm)
	}
}

// slotPath is the file of a model's slot.
func (u *Updater) slotPath(name, slot string) string {
	return filepath.Join(u.cfg.Dir, "slots", name+"."+slot)
}

// partPath is the partial download of an artifact, named by content so a
// restart resumes the same bytes and a different artifact never appends
// to it.
func (u *Updater) partPath(sha string) string {
	return filepath.Join(u.cfg.Dir, "downloads", sha+".part")
}

func (u *Updater) deployment(ctx context.Context, name string) (state.Deployment, error) {
	ds, err := u.cfg.Store.Deployments(ctx)
	if err != nil {
		return state.Deployment{}, err
	}
	for _, d := range ds {
		if d.Name == name {
			return d, nil
		}
	}
	return state.Deployment{Name: name}, nil
}

// active is the slot that serves; a model never updated serves its
// configured version, which counts as slot "a".
func active(d state.Deployment) string {
	if d.Active == "" {
		return "a"
	}
	return d.Active
}

func other(slot string) string {
	if slot == "a" {
		return "b"
	}
	return "a"
}

func terminal(s int32) bool {
	return s != int32(proto.JobProgress_STATE_IN_PROGRESS) && s != int32(proto.JobProgress_STATE_UNSPECIFIED)
}

func (u *Updater) report(j state.Job, model string, fraction float64) {
	u.cfg.Report(&proto.JobProgress{
		ProtocolVersion: proto.ProtocolVersion, DeviceId: u.cfg.DeviceID, JobId: j.ID, Generation: j.Generation,
		Model: model, Version: j.Version, Step: proto.JobProgress_Step(j.Step), State: proto.JobProgress_State(j.State),
		Reason: truncate(j.Reason, proto.MaxStringLen), Fraction: fraction, SentUnixMs: u.cfg.Now().UnixMilli(),
	})
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Resend reports the current state of every model's last job again; the
// agent calls it on every connect, since progress sent while offline is
// lost and the fleet waits for a terminal state.
func (u *Updater) Resend(ctx context.Context) {
	ds, err := u.cfg.Store.Deployments(ctx)
	if err != nil {
		u.log.Warn("read deployments", "err", err)
		return
	}
	for _, d := range ds {
		if d.Job.ID != "" {
			u.report(d.Job, d.Name, 1)
		}
	}
}

// step persists a step of the job and reports it; the step takes effect
// only after this returns nil.
func (u *Updater) step(ctx context.Context, dep *state.Deployment, s proto.JobProgress_Step) error {
	dep.Job.Step, dep.Job.State = int32(s), int32(proto.JobProgress_STATE_IN_PROGRESS)
	if err := u.cfg.Store.PutDeployment(ctx, *dep); err != nil {
		return fmt.Errorf("record step %s: %w", s, err)
	}
	u.report(dep.Job, dep.Name, 0)
	return nil
}

// finish persists a terminal state and reports it. It uses a context of
// its own so a job interrupted by a newer generation still records why.
func (u *Updater) finish(dep *state.Deployment, st proto.JobProgress_State, reason string) {
	dep.Job.State, dep.Job.Reason = int32(st), reason
	if st == proto.JobProgress_STATE_SUCCEEDED {
		dep.Job.Step = int32(proto.JobProgress_STEP_DONE)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := u.cfg.Store.PutDeployment(ctx, *dep); err != nil {
		u.log.Error("record job outcome", "model", dep.Name, "job", dep.Job.ID, "err", err)
	}
	u.setModels(ctx)
	lvl := slog.LevelInfo
	if st != proto.JobProgress_STATE_SUCCEEDED {
		lvl = slog.LevelWarn
	}
	u.log.Log(ctx, lvl, "update job finished", "model", dep.Name, "version", dep.Job.Version, "job", dep.Job.ID, "state", st, "reason", reason)
	if u.cfg.Finished != nil {
		u.cfg.Finished()
	}
	u.report(dep.Job, dep.Name, 1)
}

// failState maps an error to the job state it ends in.
func failState(err error) proto.JobProgress_State {
	switch {
	case errors.Is(err, ErrIncompatible):
		return proto.JobProgress_STATE_INCOMPATIBLE
	case errors.Is(err, ErrSelfTest), errors.Is(err, ErrHealth):
		return proto.JobProgress_STATE_ROLLED_BACK
	}
	return proto.JobProgress_STATE_FAILED
}

// Close closes the models the updater still holds. Call it after Run has
// returned (or when Run was never called).
func (u *Updater) Close() error {
	u.releaseHeld()
	return nil
}
