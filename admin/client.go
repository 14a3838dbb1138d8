package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls a running node's admin API and reads its envelope: the
// CLI's and the tests' one way to make a call. It is safe for concurrent
// use.
type Client struct {
	// Base is the API's URL, without a trailing slash: "http://127.0.0.1:9180".
	Base string
	// Token is the bearer token sent with every call that has no
	// Authorization header of its own; empty: none.
	Token string
	// HTTP makes the calls; nil: one with a 30-second timeout.
	HTTP *http.Client
	// Header is sent with every call, beside what the call sets itself
	// (such as X-Request-Id).
	Header http.Header
}

// maxAnswer bounds the answer a client reads.
const maxAnswer = 64 << 20

// NewClient returns a client of the API at base, a URL or a bare
// host:port (then http), sending token with every call.
func NewClient(base, token string) *Client {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{Base: strings.TrimRight(base, "/"), Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// UnreachableError is a call that nothing answered: no connection, or a
// timeout.
type UnreachableError struct {
	Base string
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the admin API at %s: %v", e.Base, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Response is an answer of the API: its status, headers, the body as it
// came, and the envelope decoded from it.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	Envelope
}

// Err is the answer's *Error when it is not a success, else nil.
func (r *Response) Err() error {
	if r.Success {
		return nil
	}
	return &Error{Status: r.Status, Errors: r.Errors}
}

// Decode decodes the result into out.
func (r *Response) Decode(out any) error {
	if err := json.Unmarshal(r.Result, out); err != nil {
		return fmt.Errorf("decode the admin API's result: %v", err)
	}
	return nil
}

// NewRequest returns a request of method for path ("/v1/prefixes"), with
// body sent as it is (nil: none).
func (c *Client) NewRequest(method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequest(method, c.Base+path, body)
	if err != nil {
		return nil, fmt.Errorf("admin URL %q: %v", c.Base, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// Send makes the call req and reads the answer's envelope, whatever its
// status: the error is one of calling (an *UnreachableError) or of an
// answer that is not the envelope.
func (c *Client) Send(req *http.Request) (*Response, error) {
	for k, vs := range c.Header {
		if req.Header.Get(k) == "" {
			req.Header[k] = vs
		}
	}
	if c.Token != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, &UnreachableError{Base: c.Base, Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("read the admin API's answer: %v", err)
	}
	r := &Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	if err := json.Unmarshal(raw, &r.Envelope); err != nil {
		return r, fmt.Errorf("the admin API at %s answered %s with something that is not its JSON envelope", c.Base, resp.Status)
	}
	return r, nil
}

// Call sends body as it is (nil: none) and returns the answer, which is a
// success: an answer that is not is an *Error.
func (c *Client) Call(method, path string, body io.Reader) (*Response, error) {
	req, err := c.NewRequest(method, path, body)
	if err != nil {
		return nil, err
	}
	r, err := c.Send(req)
	if err != nil {
		return nil, err
	}
	return r, r.Err()
}

// Do calls the API with body encoded as JSON (nil: none) and decodes the
// result into out (nil: not decoded). An answer that is not a success is
// an *Error.
func (c *Client) Do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	r, err := c.Call(method, path, rd)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	return r.Decode(out)
}

// The fleet's shapes, as the CLI decodes them.

// Node is a node of the fleet as GET /v1/nodes lists it.
type Node struct {
	ID       string            `json:"id"`
	Labels   map[string]string `json:"labels"`
	Live     bool              `json:"live"`
	Revision int64             `json:"revision"`
	// State is in_sync, behind, failed or stale.
	State   string `json:"state"`
	Error   string `json:"error"`
	Version string `json:"version,omitempty"`
}

// Fleet is GET /v1/fleet: the fleet as the answering node sees it.
type Fleet struct {
	Node      string         `json:"node"`
	Endpoints []string       `json:"endpoints"`
	Revision  int64          `json:"revision"`
	Applied   int64          `json:"applied"`
	Stale     bool           `json:"stale"`
	Nodes     int            `json:"nodes"`
	States    map[string]int `json:"states"`
}

// BatchResult is POST /v1/batch's result: the revision that made every
// binding, how many, and their provisioning.
type BatchResult = Batch

// The codes of the envelope's errors, for a client to tell them apart
// (docs/api.md lists them).
const (
	CodeInvalidJSON  = codeInvalidJSON
	CodeInvalidField = codeInvalidField
	CodeInvalidState = codeInvalidState
	CodeConflict     = codeConflict
	CodeConfigOwned  = codeConfigOwned
	CodeNotFound     = codeNotFound
	CodeHasBindings  = codeHasBindings
	CodeUnauthorized = codeUnauthorized
	CodeForbidden    = codeForbidden
	CodeInternal     = codeInternal
	CodeUnavailable  = codeUnavailable
)

// Field is the field a message is about: the name before its first ": "
// ("cidr: 192.0.2.0/24 ..."), empty for a message about no one field.
func (m Message) Field() string {
	name, _, ok := strings.Cut(m.Message, ": ")
	if !ok || name == "" || strings.ContainsAny(name, " \t") {
		return ""
	}
	return name
}

// Has reports whether one of the errors has code and is about field
// (empty: any field, or none).
func (e *Error) Has(code int, field string) bool {
	for _, m := range e.Errors {
		if m.Code == code && (field == "" || m.Field() == field) {
			return true
		}
	}
	return false
}
