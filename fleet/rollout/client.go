package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Client calls the rollout API; the edgefleet CLI uses it.
type Client struct {
	base string
	http *http.Client
}

// maxResponseBytes bounds what the client reads from one response.
const maxResponseBytes = 64 << 20

// NewClient returns a client of the server at base, e.g.
// http://127.0.0.1:8080.
func NewClient(base string) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server address %q is not an http(s) URL like http://127.0.0.1:8080", base)
	}
	return &Client{base: strings.TrimSuffix(base, "/"), http: &http.Client{Timeout: 60 * time.Second}}, nil
}

// StatusError is an error answer of the API.
type StatusError struct {
	Code int
	Msg  string
}

func (e *StatusError) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("server answered %d %s", e.Code, http.StatusText(e.Code))
	}
	return e.Msg
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	// The fleet server wants an API token (fleet/auth); the CLI takes it
	// from the environment like api.NewClient does.
	if tok := strings.TrimSpace(os.Getenv("EDGEFLEET_TOKEN")); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var ae APIError
		json.Unmarshal(data, &ae)
		return &StatusError{Code: resp.StatusCode, Msg: ae.Error}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: answer is not the expected JSON: %w", method, path, err)
	}
	return nil
}

// Create starts a rollout.
func (c *Client) Create(ctx context.Context, s Spec) (*Status, error) {
	var out Status
	return &out, c.do(ctx, http.MethodPost, "/api/v1/rollouts", s, &out)
}

// Get returns a rollout's status.
func (c *Client) Get(ctx context.Context, id string) (*Status, error) {
	var out Status
	return &out, c.do(ctx, http.MethodGet, "/api/v1/rollouts/"+url.PathEscape(id), nil, &out)
}

// List returns every rollout, newest first.
func (c *Client) List(ctx context.Context) ([]Rollout, error) {
	var out struct {
		Rollouts []Rollout `json:"rollouts"`
	}
	return out.Rollouts, c.do(ctx, http.MethodGet, "/api/v1/rollouts", nil, &out)
}

// Act applies an operator action (ActionPause, ...).
func (c *Client) Act(ctx context.Context, id, action, reason string) (*Status, error) {
	var out Status
	return &out, c.do(ctx, http.MethodPost, "/api/v1/rollouts/"+url.PathEscape(id)+"/"+url.PathEscape(action), ActionRequest{Reason: reason}, &out)
}

// Audit returns a rollout's audit log.
func (c *Client) Audit(ctx context.Context, id string) ([]AuditEntry, error) {
	var out struct {
		Entries []AuditEntry `json:"entries"`
	}
	return out.Entries, c.do(ctx, http.MethodGet, "/api/v1/rollouts/"+url.PathEscape(id)+"/audit?limit=10000", nil, &out)
}

// Targets returns a rollout's devices; state filters (incompatible,
// dispatched, pending, or "" for all).
func (c *Client) Targets(ctx context.Context, id, state string) ([]Target, error) {
	var out struct {
		Devices []Target `json:"devices"`
	}
	return out.Devices, c.do(ctx, http.MethodGet, "/api/v1/rollouts/"+url.PathEscape(id)+"/devices?state="+url.QueryEscape(state), nil, &out)
}

// PutGroup creates or replaces a group.
func (c *Client) PutGroup(ctx context.Context, g Group) error {
	return c.do(ctx, http.MethodPut, "/api/v1/groups/"+url.PathEscape(g.Name), g, nil)
}
