package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/fleet/inventory"
)

// Client calls the API; the edgefleet CLI uses it.
type Client struct {
	base  string
	http  *http.Client
	token string
}

// maxResponseBytes bounds what the client reads from one response.
const maxResponseBytes = 64 << 20

// TokenEnv names the environment variable NewClient takes the API token
// from.
const TokenEnv = "EDGEFLEET_TOKEN"

// NewClient returns a client of the server at base, e.g.
// http://127.0.0.1:8080, sending the API token in $EDGEFLEET_TOKEN (create
// one on the console's Account page); SetToken replaces it.
func NewClient(base string) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server address %q is not an http(s) URL like http://127.0.0.1:8080", base)
	}
	return &Client{base: strings.TrimSuffix(base, "/"), http: &http.Client{Timeout: 30 * time.Second}, token: os.Getenv(TokenEnv)}, nil
}

// SetToken sets the API token sent as "Authorization: Bearer"; empty
// sends none.
func (c *Client) SetToken(token string) { c.token = strings.TrimSpace(token) }

// StatusError is an error response of the API.
type StatusError struct {
	Code int
	Body Error
}

func (e *StatusError) Error() string {
	if e.Body.Error == "" {
		return fmt.Sprintf("server answered %d %s", e.Code, http.StatusText(e.Code))
	}
	return e.Body.Error
}

// Devices returns one page of devices matching q.
func (c *Client) Devices(ctx context.Context, q inventory.Query) (DeviceList, error) {
	v := url.Values{}
	keys := make([]string, 0, len(q.Labels))
	for k := range q.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v.Add("label", k+"="+q.Labels[k])
	}
	for k, val := range map[string]string{"profile": q.Profile, "status": q.Status, "model": q.Model, "cursor": q.Cursor} {
		if val != "" {
			v.Set(k, val)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out DeviceList
	err := c.get(ctx, "/api/v1/devices?"+v.Encode(), &out)
	return out, err
}

// AllDevices follows the cursor and returns every device matching q.
func (c *Client) AllDevices(ctx context.Context, q inventory.Query) ([]Device, error) {
	var all []Device
	for {
		page, err := c.Devices(ctx, q)
		if err != nil {
			return nil, err
		}
		all = append(all, page.Devices...)
		if page.Next == "" {
			return all, nil
		}
		q.Cursor = page.Next
	}
}

// Device returns one device; a missing one is a *StatusError with Code 404.
func (c *Client) Device(ctx context.Context, id string) (Device, error) {
	var d Device
	err := c.get(ctx, "/api/v1/devices/"+url.PathEscape(id), &d)
	return d, err
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the fleet server at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxResponseBytes)
	if resp.StatusCode != http.StatusOK {
		se := &StatusError{Code: resp.StatusCode}
		_ = json.NewDecoder(body).Decode(&se.Body)
		if resp.StatusCode == http.StatusUnauthorized && c.token == "" {
			se.Body.Error = "the server wants an API token: create one on the console's Account page and set " + TokenEnv
		}
		return se
	}
	if err := json.NewDecoder(body).Decode(v); err != nil {
		return fmt.Errorf("read answer of %s%s: %w", c.base, path, err)
	}
	return nil
}

// IsNotFound reports whether err is a 404 from the API.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}
