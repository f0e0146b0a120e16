package enroll

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls the operator side of the enrolment API; the edgefleet CLI
// uses it.
type Client struct {
	base  string
	http  *http.Client
	token string
}

// SetToken makes the client send an operator API token
// ("Authorization: Bearer"), as the server's operator routes require.
func (c *Client) SetToken(token string) { c.token = token }

// NewClient returns a client of the server at base, e.g.
// http://127.0.0.1:8080. hc may be nil.
func NewClient(base string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server address %q is not an http(s) URL like http://127.0.0.1:8080", base)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: strings.TrimSuffix(base, "/"), http: hc}, nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e errorBody
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return fmt.Errorf("server: %s", e.Error)
		}
		return fmt.Errorf("%s %s: server answered %s", method, path, resp.Status)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
		}
	}
	return nil
}

// CreateToken creates an enrolment token.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (TokenCreated, error) {
	var out TokenCreated
	err := c.do(ctx, http.MethodPost, "/api/v1/enroll-tokens", req, &out)
	return out, err
}

// Tokens lists the tokens.
func (c *Client) Tokens(ctx context.Context) ([]Token, error) {
	var out []Token
	err := c.do(ctx, http.MethodGet, "/api/v1/enroll-tokens", nil, &out)
	return out, err
}

// RevokeToken revokes a token.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/enroll-tokens/"+url.PathEscape(id), nil, nil)
}

// Devices lists enrolment records in a state ("" for all).
func (c *Client) Devices(ctx context.Context, state string) ([]Device, error) {
	var out []Device
	err := c.do(ctx, http.MethodGet, "/api/v1/enrollments?state="+url.QueryEscape(state), nil, &out)
	return out, err
}

// Act runs accept, reject or revoke on a device.
func (c *Client) Act(ctx context.Context, id, action string) (Device, error) {
	var out Device
	err := c.do(ctx, http.MethodPost, "/api/v1/enrollments/"+url.PathEscape(id)+"/"+url.PathEscape(action), nil, &out)
	return out, err
}

// Preauthorize enrols a device without a token and returns what it needs
// to connect, to be installed on it out of band.
func (c *Client) Preauthorize(ctx context.Context, id string, labels map[string]string) (json.RawMessage, error) {
	var out json.RawMessage
	err := c.do(ctx, http.MethodPost, "/api/v1/enrollments/"+url.PathEscape(id)+"/preauthorize", PreauthorizeRequest{Labels: labels}, &out)
	return out, err
}

// Remove forgets a device so its id may enrol again.
func (c *Client) Remove(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/enrollments/"+url.PathEscape(id), nil, nil)
}
