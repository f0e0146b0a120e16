package update

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-version"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/proto"
)

// applyModel takes one desired model from wherever its job stands to a
// terminal state. runCtx ends with the agent; ctx also ends when a newer
// generation arrives.
func (u *Updater) applyModel(runCtx, ctx context.Context, d *proto.DesiredDeployment, dm *proto.DesiredModel) {
	name := dm.GetName()
	dep, err := u.deployment(ctx, name)
	if err != nil {
		u.log.Error("read deployment", "model", name, "err", err)
		return
	}
	same := dep.Job.ID == dm.GetJobId() && dep.Job.Generation == d.GetGeneration()
	retry := same && retryable(dep.Job)
	if same && terminal(dep.Job.State) && !retry {
		return // done before a restart or a reconnect; Resend reports it
	}
	if retry && !u.retryWait(ctx, dep.Job) {
		return
	}
	if !same || retry {
		if dep.Job.ID != "" && !terminal(dep.Job.State) {
			// A job of an older generation that a crash interrupted:
			// settle it before starting the new one.
			u.settleInterrupted(&dep)
		}
		if v, ok := u.cfg.Server.ServedVersion(name); ok && v == dm.GetVersion() && u.activeSHA(dep) == dm.GetSha256() {
			dep.Job = state.Job{ID: dm.GetJobId(), Generation: d.GetGeneration(), RolloutID: d.GetRolloutId(), Version: dm.GetVersion(), SHA256: dm.GetSha256()}
			if err := u.step(ctx, &dep, proto.JobProgress_STEP_QUEUED); err != nil {
				u.log.Error("update job", "model", name, "err", err)
				return
			}
			u.finish(&dep, proto.JobProgress_STATE_SUCCEEDED, "already running this version")
			return
		}
		_, had := u.cfg.Server.ServedVersion(name)
		dep.Job = state.Job{
			ID: dm.GetJobId(), Generation: d.GetGeneration(), RolloutID: d.GetRolloutId(), Version: dm.GetVersion(), SHA256: dm.GetSha256(),
			Target: other(active(dep)), Previous: active(dep), HadPrevious: had,
		}
		if err := u.step(ctx, &dep, proto.JobProgress_STEP_QUEUED); err != nil {
			u.log.Error("update job", "model", name, "err", err)
			return
		}
	}
	err = u.run(ctx, &dep, dm)
	switch {
	case err == nil:
		u.finish(&dep, proto.JobProgress_STATE_SUCCEEDED, "")
	case runCtx.Err() != nil:
		// The agent is stopping: leave the job as it stands; the next
		// start resumes it from what the state says.
		u.log.Info("update interrupted by shutdown; resumes at the next start", "model", name, "step", proto.JobProgress_Step(dep.Job.Step))
	case ctx.Err() != nil:
		u.abandon(&dep, ErrSuperseded)
	default:
		u.abandon(&dep, err)
	}
}

// retryable reports whether a finished job failed only for want of its
// bytes (the artifact server was unreachable or cut every connection), so
// the same generation delivered again deserves another attempt. Verdicts
// (a manifest or artifact that does not verify, an incompatible variant,
// a failed self-test or health window) are final for their generation.
func retryable(j state.Job) bool {
	return j.State == int32(proto.JobProgress_STATE_FAILED) && strings.HasPrefix(j.Reason, ErrDownload.Error())
}

// retryWait waits before retrying a job that failed its download, longer
// the more often it was retried, so a fleet server that keeps failing is
// not hammered on every reconnect. It reports false when ctx ended.
func (u *Updater) retryWait(ctx context.Context, j state.Job) bool {
	if u.retryJob != j.ID || u.retryGen != j.Generation {
		u.retryJob, u.retryGen, u.retryCount = j.ID, j.Generation, 0
	}
	u.retryCount++
	d := u.backoff(u.retryCount)
	u.log.Info("retrying an update whose download failed", "job", j.ID, "generation", j.Generation, "retry", u.retryCount, "in", d.Round(time.Millisecond))
	c, stop := u.cfg.After(d)
	select {
	case <-ctx.Done():
		stop()
		return false
	case <-c:
		return true
	}
}

// activeSHA is the sha256 of what serves, when the updater installed it.
func (u *Updater) activeSHA(dep state.Deployment) string {
	if s, ok := dep.Slots[active(dep)]; ok {
		return s.SHA256
	}
	for _, b := range u.cfg.Base {
		if b.Name == dep.Name {
			return b.SHA256
		}
	}
	return ""
}

// abandon ends a job that did not succeed: if it had switched, the
// previous version serves again; the outcome is recorded and reported. A
// job superseded by a newer generation also switches back, since the
// previous version is still loaded and is what a fleet rollback names.
func (u *Updater) abandon(dep *state.Deployment, cause error) {
	if errors.Is(cause, ErrSuperseded) && dep.Active == dep.Job.Target && u.nextKeeps(dep.Name, dep.Job.Version, dep.Job.SHA256) {
		// The newer generation names the version just switched to: going
		// back and forth would only cost two switches. The previous
		// version is no longer needed loaded.
		if m := u.held[dep.Name]; m != nil {
			m.Close()
			delete(u.held, dep.Name)
		}
		u.finish(dep, proto.JobProgress_STATE_FAILED, fmt.Sprintf("%v; it keeps %s", cause, dep.Job.Version))
		return
	}
	if dep.Job.Step >= int32(proto.JobProgress_STEP_SWITCHING) && dep.Active == dep.Job.Target {
		prev := u.versionOf(*dep, dep.Job.Previous)
		if err := u.rollback(dep); err != nil {
			u.log.Error("rollback", "model", dep.Name, "err", err)
			cause = fmt.Errorf("%w; switching back failed too: %v", cause, err)
		} else if prev != "" {
			cause = fmt.Errorf("%w; switched back to %s", cause, prev)
		} else {
			cause = fmt.Errorf("%w; no longer serving %s", cause, dep.Name)
		}
	}
	u.finish(dep, failState(cause), cause.Error())
}

// nextKeeps reports whether the desired deployment waiting to be applied
// names this version of the model.
func (u *Updater) nextKeeps(name, version, sha string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, m := range u.latest.GetModels() {
		if m.GetName() == name {
			return m.GetVersion() == version && m.GetSha256() == sha
		}
	}
	return false
}

// settleInterrupted records the end of a job that an older generation
// started and a crash interrupted; its switch, if any, stays in place and
// the new job starts from what serves.
func (u *Updater) settleInterrupted(dep *state.Deployment) {
	u.finish(dep, proto.JobProgress_STATE_FAILED, ErrSuperseded.Error())
	if m := u.held[dep.Name]; m != nil {
		m.Close()
		delete(u.held, dep.Name)
	}
}

// run performs the steps from where dep.Job stands.
func (u *Updater) run(ctx context.Context, dep *state.Deployment, dm *proto.DesiredModel) error {
	if dep.Job.Step >= int32(proto.JobProgress_STEP_SWITCHING) && dep.Active == dep.Job.Target {
		// Resumed after the switch: only the health window is left.
		return u.watch(ctx, dep)
	}
	man, err := u.checkManifest(dm)
	if err != nil {
		return err
	}
	b, err := u.pickBackend(man.Backend, man.Format)
	if err != nil {
		return err
	}
	slot := runtime.Model(nil)
	target := dep.Job.Target
	if s, ok := dep.Slots[target]; !ok || s.SHA256 != man.Artifact.SHA256 {
		if err := u.fetch(ctx, dep, dm, man); err != nil {
			return err
		}
	}
	inputs, expected, err := u.fetchSelfTest(ctx, dm.GetUrl(), man)
	if err != nil {
		return err
	}
	if err := u.step(ctx, dep, proto.JobProgress_STEP_LOADING); err != nil {
		return err
	}
	slot, err = u.openSlot(ctx, b, dep.Name, target, dep.Slots[target])
	if err != nil {
		return err
	}
	if err := u.step(ctx, dep, proto.JobProgress_STEP_SELF_TEST); err != nil {
		slot.Close()
		return err
	}
	if err := u.selfTest(ctx, b, slot, inputs, expected, man.SelfTest); err != nil {
		slot.Close()
		return err
	}
	// Switch: the state names the new slot before it serves, so a crash
	// from here on restarts on the new version and resumes the window.
	dep.Active = target
	if err := u.step(ctx, dep, proto.JobProgress_STEP_SWITCHING); err != nil {
		dep.Active = dep.Job.Previous
		slot.Close()
		return err
	}
	u.health.reset(dep.Name, man.Version, u.versionOf(*dep, dep.Job.Previous))
	prev, err := u.cfg.Server.ServeModel(dep.Name, man.Version, b.Name(), slot)
	if err != nil {
		slot.Close()
		return fmt.Errorf("switch to %s: %w", man.Version, err)
	}
	if prev != nil {
		u.held[dep.Name] = prev
	}
	u.setModels(ctx)
	return u.watch(ctx, dep)
}

// watch runs the health window of the version in the target slot.
func (u *Updater) watch(ctx context.Context, dep *state.Deployment) error {
	if err := u.step(ctx, dep, proto.JobProgress_STEP_HEALTH_WINDOW); err != nil {
		return err
	}
	c, stop := u.cfg.After(u.cfg.Health.Window)
	select {
	case <-ctx.Done():
		stop()
		return ctx.Err()
	case <-c:
	}
	cur := u.health.figures(dep.Name, dep.Job.Version)
	prev := u.health.figures(dep.Name, u.versionOf(*dep, dep.Job.Previous))
	if err := u.cfg.Health.verdict(cur, prev); err != nil {
		return err
	}
	if m := u.held[dep.Name]; m != nil {
		if err := m.Close(); err != nil {
			u.log.Warn("closing previous version", "model", dep.Name, "err", err)
		}
		delete(u.held, dep.Name)
	}
	return nil
}

// versionOf is the version a slot holds ("a" without a record is the
// configured model).
func (u *Updater) versionOf(dep state.Deployment, slot string) string {
	if s, ok := dep.Slots[slot]; ok {
		return s.Version
	}
	if slot == "a" {
		for _, b := range u.cfg.Base {
			if b.Name == dep.Name {
				return b.Version
			}
		}
	}
	return ""
}

// rollback serves the previous slot again. The state names it first, so a
// crash in between restarts on the previous version.
func (u *Updater) rollback(dep *state.Deployment) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dep.Active = dep.Job.Previous
	if err := u.cfg.Store.PutDeployment(ctx, *dep); err != nil {
		return fmt.Errorf("record rollback: %w", err)
	}
	var replaced runtime.Model
	var err error
	if !dep.Job.HadPrevious {
		replaced, err = u.cfg.Server.RemoveModel(dep.Name)
	} else {
		prev := u.held[dep.Name]
		delete(u.held, dep.Name)
		backend := ""
		if prev == nil {
			// Restarted since the switch: load the previous slot again.
			s, ok := dep.Slots[dep.Job.Previous]
			if !ok {
				return fmt.Errorf("previous version of %s is neither loaded nor in a slot", dep.Name)
			}
			b, berr := u.pickBackend(s.Backend, s.Format)
			if berr != nil {
				return berr
			}
			if prev, err = u.openSlot(ctx, b, dep.Name, dep.Job.Previous, s); err != nil {
				return err
			}
			backend = b.Name()
		}
		if backend == "" {
			backend = u.backendOf(*dep, dep.Job.Previous)
		}
		replaced, err = u.cfg.Server.ServeModel(dep.Name, u.versionOf(*dep, dep.Job.Previous), backend, prev)
		if err != nil {
			prev.Close()
		}
	}
	if replaced != nil {
		replaced.Close()
	}
	return err
}

func (u *Updater) backendOf(dep state.Deployment, slot string) string {
	if s, ok := dep.Slots[slot]; ok {
		return s.Backend
	}
	for _, b := range u.cfg.Base {
		if b.Name == dep.Name {
			return b.Backend
		}
	}
	return ""
}

// checkManifest verifies the signature with the pinned key and that the
// manifest names what the desired model names.
func (u *Updater) checkManifest(dm *proto.DesiredModel) (*proto.Manifest, error) {
	m, err := proto.VerifyManifest(u.cfg.FleetKey, dm.GetManifest(), dm.GetSignature())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	mismatch := func(field, inManifest, inDesired string) error {
		return fmt.Errorf("%w: the signed manifest names %s %q, the desired model %q", ErrManifest, field, inManifest, inDesired)
	}
	switch {
	case m.Model != dm.GetName():
		return nil, mismatch("model", m.Model, dm.GetName())
	case m.Version != dm.GetVersion():
		return nil, mismatch("version", m.Version, dm.GetVersion())
	case m.Artifact.SHA256 != dm.GetSha256():
		return nil, mismatch("sha256", m.Artifact.SHA256, dm.GetSha256())
	case m.Artifact.Size != dm.GetSizeBytes():
		return nil, mismatch("size", fmt.Sprint(m.Artifact.Size), fmt.Sprint(dm.GetSizeBytes()))
	case dm.GetFormat() != "" && m.Format != dm.GetFormat():
		return nil, mismatch("format", m.Format, dm.GetFormat())
	case dm.GetBackend() != "" && m.Backend != dm.GetBackend():
		return nil, mismatch("backend", m.Backend, dm.GetBackend())
	}
	if err := u.compatible(m); err != nil {
		return nil, err
	}
	if m.Artifact.Size > u.cfg.MaxArtifactBytes {
		return nil, fmt.Errorf("%w: %s %s is %d bytes, this device takes at most %d", ErrTooLarge, m.Model, m.Version, m.Artifact.Size, u.cfg.MaxArtifactBytes)
	}
	return m, nil
}

// compatible checks what the manifest asks of the device besides a
// backend: its firmware profile and the agent's version.
func (u *Updater) compatible(m *proto.Manifest) error {
	if len(m.Profiles) > 0 && u.cfg.Profile != "" && !slices.Contains(m.Profiles, u.cfg.Profile) {
		return fmt.Errorf("%w: %s %s is built for profiles %v, this device is %s", ErrIncompatible, m.Model, m.Version, m.Profiles, u.cfg.Profile)
	}
	if m.MinAgentVersion == "" {
		return nil
	}
	c, err := version.NewConstraint(m.MinAgentVersion)
	if err != nil {
		return fmt.Errorf("%w: min_agent_version %q is not a version constraint: %v", ErrIncompatible, m.MinAgentVersion, err)
	}
	v, err := version.NewVersion(u.cfg.AgentVersion)
	if err != nil {
		u.log.Info("agent version does not parse; not checked against the manifest", "agent_version", u.cfg.AgentVersion, "min_agent_version", m.MinAgentVersion)
		return nil
	}
	if !c.Check(v) {
		return fmt.Errorf("%w: %s %s needs agent %s, this is %s", ErrIncompatible, m.Model, m.Version, m.MinAgentVersion, u.cfg.AgentVersion)
	}
	return nil
}

func (u *Updater) pickBackend(name, format string) (runtime.Backend, error) {
	var have []string
	for _, b := range u.cfg.Backends {
		have = append(have, b.Name())
		if b.Name() != name {
			continue
		}
		ok := false
		for _, f := range b.Formats() {
			ok = ok || f == format
		}
		if !ok {
			return nil, fmt.Errorf("%w: backend %s here does not run %s models (it runs %v)", ErrIncompatible, name, format, b.Formats())
		}
		if err := b.Available(); err != nil {
			return nil, fmt.Errorf("%w: backend %s is unavailable: %v", ErrIncompatible, name, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: variant needs backend %s (%s); this device has %v", ErrIncompatible, name, format, have)
}

// fetch downloads the artifact into the partial file, verifies it and
// moves it into the target slot.
func (u *Updater) fetch(ctx context.Context, dep *state.Deployment, dm *proto.DesiredModel, man *proto.Manifest) error {
	if err := u.step(ctx, dep, proto.JobProgress_STEP_DOWNLOADING); err != nil {
		return err
	}
	part := u.partPath(man.Artifact.SHA256)
	size := man.Artifact.Size
	held := partSize(part)
	if held > size {
		held = 0
	}
	if need := size - held + u.cfg.MinFreeBytes; held < size {
		free, err := u.cfg.DiskFree(u.cfg.Dir)
		if err != nil {
			return fmt.Errorf("%w: cannot read the free space of %s: %v", ErrDiskSpace, u.cfg.Dir, err)
		}
		if free < need {
			return fmt.Errorf("%w: %s %s needs %d bytes (%d to download plus %d kept free), %d are free", ErrDiskSpace, man.Model, man.Version, need, size-held, u.cfg.MinFreeBytes, free)
		}
	}
	// Progress at each quarter, not per write: a thousand devices
	// downloading at once must not flood the broker.
	last := int(4 * held / size)
	progress := func(n uint64) {
		if q := int(4 * n / size); q != last && n < size {
			last = q
			u.report(dep.Job, dep.Name, float64(n)/float64(size))
		}
	}
	u.removeStaleParts(man.Artifact.SHA256)
	if err := u.download(ctx, dm.GetUrl(), part, size, progress); err != nil {
		return err
	}
	if err := u.step(ctx, dep, proto.JobProgress_STEP_VERIFYING); err != nil {
		return err
	}
	if err := checkFile(part, man.Artifact); err != nil {
		// Never kept: a resumed download must not build on bad bytes.
		os.Remove(part)
		return err
	}
	// The slot is about to be overwritten: the state forgets it first.
	target := dep.Job.Target
	delete(dep.Slots, target)
	if err := u.cfg.Store.PutDeployment(ctx, *dep); err != nil {
		return fmt.Errorf("record slot %s emptied: %w", target, err)
	}
	dst := u.slotPath(dep.Name, target)
	if err := os.Rename(part, dst); err != nil {
		return fmt.Errorf("install into slot %s: %w", target, err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return err
	}
	if dep.Slots == nil {
		dep.Slots = map[string]state.Slot{}
	}
	dep.Slots[target] = state.Slot{Version: man.Version, Format: man.Format, Backend: man.Backend, SHA256: man.Artifact.SHA256, Size: man.Artifact.Size}
	if err := u.cfg.Store.PutDeployment(ctx, *dep); err != nil {
		return fmt.Errorf("record slot %s: %w", target, err)
	}
	return nil
}

func checkFile(path string, a proto.ArtifactRef) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return a.Check(f)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// openSlot reads a slot's file, checks it against its record (a disk can
// rot between the download and a restart) and opens it.
func (u *Updater) openSlot(ctx context.Context, b runtime.Backend, name, slot string, s state.Slot) (runtime.Model, error) {
	p := u.slotPath(name, slot)
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("slot %s of %s: %w", slot, name, err)
	}
	if uint64(fi.Size()) != s.Size {
		return nil, fmt.Errorf("%w: slot %s of %s is %d bytes, its record says %d", proto.ErrArtifactMismatch, slot, name, fi.Size(), s.Size)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	ref := proto.ArtifactRef{SHA256: s.SHA256, Size: s.Size}
	if err := ref.CheckBytes(data); err != nil {
		return nil, fmt.Errorf("slot %s of %s: %w", slot, name, err)
	}
	opts := runtime.Options{Threads: u.cfg.Threads, ArenaLimit: u.cfg.ArenaLimit, Logger: u.log}
	var m runtime.Model
	if no, ok := b.(NamedOpener); ok {
		m, err = no.OpenNamed(ctx, name, s.Version, data, opts)
	} else {
		m, err = b.Open(ctx, data, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("load %s %s with %s: %w", name, s.Version, b.Name(), err)
	}
	return m, nil
}

// selfTestURL is where a self-test tensor is served: next to the artifact,
// by its own sha256.
func selfTestURL(artifactURL, sha string) (string, error) {
	u, err := url.Parse(artifactURL)
	if err != nil {
		return "", err
	}
	dir, _ := path.Split(u.Path)
	if !strings.HasSuffix(dir, "/artifacts/") {
		return "", fmt.Errorf("artifact URL %s does not end in /artifacts/{sha256}; cannot locate self-test tensors", artifactURL)
	}
	u.Path, u.RawQuery, u.RawPath = dir+sha, "", ""
	return u.String(), nil
}

func (u *Updater) fetchSelfTest(ctx context.Context, artifactURL string, man *proto.Manifest) (inputs, expected [][]byte, err error) {
	if man.SelfTest == nil {
		return nil, nil, nil
	}
	var total uint64
	for _, r := range append(append([]proto.ArtifactRef(nil), man.SelfTest.Inputs...), man.SelfTest.ExpectedOutputs...) {
		total += r.Size
	}
	if total > maxSelfTestBytes {
		return nil, nil, fmt.Errorf("%w: self-test tensors take %d bytes, limit %d", ErrTooLarge, total, maxSelfTestBytes)
	}
	get := func(refs []proto.ArtifactRef) ([][]byte, error) {
		var out [][]byte
		for _, r := range refs {
			url, err := selfTestURL(artifactURL, r.SHA256)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrDownload, err)
			}
			b, err := u.fetchSmall(ctx, url, r.Size)
			if err != nil {
				return nil, err
			}
			if err := r.CheckBytes(b); err != nil {
				return nil, fmt.Errorf("self-test tensor: %w", err)
			}
			out = append(out, b)
		}
		return out, nil
	}
	if inputs, err = get(man.SelfTest.Inputs); err != nil {
		return nil, nil, err
	}
	if expected, err = get(man.SelfTest.ExpectedOutputs); err != nil {
		return nil, nil, err
	}
	return inputs, expected, nil
}

// selfTest runs the sample input and compares every output element with
// the expected one, within the tolerance.
func (u *Updater) selfTest(ctx context.Context, b runtime.Backend, m runtime.Model, inputs, expected [][]byte, st *proto.SelfTest) error {
	if st == nil {
		return nil
	}
	if ex, ok := b.(SelfTestExempt); ok {
		u.log.Info("self-test skipped", "backend", b.Name(), "why", ex.SkipSelfTest())
		return nil
	}
	infos := m.Inputs()
	if len(inputs) != len(infos) {
		return fmt.Errorf("%w: the manifest gives %d input tensors, the model takes %d", ErrSelfTest, len(inputs), len(infos))
	}
	in := make([]runtime.Tensor, len(infos))
	for i, info := range infos {
		shape, err := concreteShape(info, len(inputs[i]))
		if err != nil {
			return fmt.Errorf("%w: input %d: %v", ErrSelfTest, i, err)
		}
		in[i] = runtime.Tensor{DType: info.DType, Shape: shape, Data: inputs[i]}
	}
	out := make([]runtime.Tensor, len(m.Outputs()))
	s, err := m.NewSession()
	if err != nil {
		return fmt.Errorf("%w: open a session: %v", ErrSelfTest, err)
	}
	defer s.Close()
	if err := s.Run(ctx, in, out); err != nil {
		return fmt.Errorf("%w: running the sample input: %v", ErrSelfTest, err)
	}
	if len(expected) == 0 {
		return nil
	}
	if len(expected) != len(out) {
		return fmt.Errorf("%w: the manifest gives %d expected outputs, the model has %d", ErrSelfTest, len(expected), len(out))
	}
	for i := range out {
		if err := compare(out[i], expected[i], st.Tolerance); err != nil {
			return fmt.Errorf("%w: output %d: %v", ErrSelfTest, i, err)
		}
	}
	return nil
}

// concreteShape fills one unknown (-1) dimension from the data size.
func concreteShape(info runtime.TensorInfo, n int) ([]int, error) {
	shape := append([]int(nil), info.Shape...)
	unknown, known := -1, 1
	for i, d := range shape {
		if d < 0 {
			if unknown >= 0 {
				return nil, fmt.Errorf("shape %v has more than one unknown dimension", info.Shape)
			}
			unknown = i
			continue
		}
		known *= d
	}
	es := info.DType.Size()
	if unknown >= 0 && known > 0 && es > 0 && n%(known*es) == 0 {
		shape[unknown] = n / (known * es)
	}
	if runtime.ByteSize(info.DType, shape) != n {
		return nil, fmt.Errorf("%d bytes do not fill a %s tensor of shape %v", n, info.DType, info.Shape)
	}
	return shape, nil
}

// compare checks got against want element by element.
func compare(got runtime.Tensor, want []byte, tol float64) error {
	if len(got.Data) != len(want) {
		return fmt.Errorf("%d bytes, expected %d", len(got.Data), len(want))
	}
	if tol == 0 {
		if !bytes.Equal(got.Data, want) {
			return fmt.Errorf("answered %v, expected %v", preview(got.DType, got.Data), preview(got.DType, want))
		}
		return nil
	}
	es := got.DType.Size()
	if es == 0 {
		return fmt.Errorf("output dtype %s cannot be compared", got.DType)
	}
	for i := 0; i+es <= len(want); i += es {
		a, b := element(got.DType, got.Data[i:i+es]), element(got.DType, want[i:i+es])
		if math.IsNaN(a) || math.IsNaN(b) || math.Abs(a-b) > tol {
			return fmt.Errorf("element %d is %v, expected %v (tolerance %v)", i/es, a, b, tol)
		}
	}
	return nil
}

func element(d runtime.DType, b []byte) float64 {
	switch d {
	case runtime.Float32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
	case runtime.Float64:
		return math.Float64frombits(binary.LittleEndian.Uint64(b))
	case runtime.Int8:
		return float64(int8(b[0]))
	case runtime.Uint8, runtime.Bool:
		return float64(b[0])
	case runtime.Int16:
		return float64(int16(binary.LittleEndian.Uint16(b)))
	case runtime.Uint16, runtime.Float16:
		// Float16 is compared by its bits: close enough for a tolerance
		// of zero, which is what half-precision samples use.
		return float64(binary.LittleEndian.Uint16(b))
	case runtime.Int32:
		return float64(int32(binary.LittleEndian.Uint32(b)))
	case runtime.Uint32:
		return float64(binary.LittleEndian.Uint32(b))
	case runtime.Int64:
		return float64(int64(binary.LittleEndian.Uint64(b)))
	case runtime.Uint64:
		return float64(binary.LittleEndian.Uint64(b))
	}
	return math.NaN()
}

// preview shows the first elements of a tensor for an error message.
func preview(d runtime.DType, b []byte) string {
	es := d.Size()
	if es == 0 {
		return fmt.Sprintf("%d bytes", len(b))
	}
	var parts []string
	for i := 0; i+es <= len(b) && len(parts) < 8; i += es {
		parts = append(parts, fmt.Sprint(element(d, b[i:i+es])))
	}
	if len(b)/es > 8 {
		parts = append(parts, "…")
	}
	return "[" + strings.Join(parts, " ") + "]"
}
