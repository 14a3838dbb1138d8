package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// Error codes of the envelope; docs/api.md lists them.
const (
	codeInvalidJSON  = 1000
	codeInvalidField = 1001
	codeInvalidState = 1002
	codeConflict     = 1003
	codeConfigOwned  = 1004
	codeNotFound     = 1005
	codeHasBindings  = 1006
	codeUnauthorized = 1007
	codeForbidden    = 1008
	codeInternal     = 1009
	codeUnavailable  = 1010
)

// Envelope is every /v1 answer: success, the errors, messages and the
// result (JSON null on an error).
type Envelope struct {
	Success  bool            `json:"success"`
	Errors   []Message       `json:"errors"`
	Messages []string        `json:"messages"`
	Result   json.RawMessage `json:"result"`
}

// Message is one error of an envelope: its code and a message that starts
// with the field it is about.
type Message struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// Error is an answer of the API that is not a success: its HTTP status and
// the envelope's errors. The handlers return one (or another error, which
// errorOf maps to one); the Client returns one for such an answer.
type Error struct {
	Status int
	Errors []Message

	header http.Header // answered with the error: Retry-After, WWW-Authenticate
}

// Error reads like the status line and the messages: "409 Conflict: cidr: ...".
func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message())
}

// Message is the envelope's messages, joined.
func (e *Error) Message() string {
	msgs := make([]string, len(e.Errors))
	for i, m := range e.Errors {
		msgs[i] = m.Message
	}
	return strings.Join(msgs, "; ")
}

// Code is the first error's code, 0 if there is none.
func (e *Error) Code() int {
	if len(e.Errors) == 0 {
		return 0
	}
	return e.Errors[0].Code
}

// The fields of the errors that are not about a field of the request
// body or query: the route itself, the Authorization header, and the node
// (its data plane, its store, its fleet) when the node, not the request,
// is why.
const (
	fieldPath          = "path"
	fieldAuthorization = "authorization"
	fieldNode          = "node"
)

// fieldError is an error about one field: its message is the field, ": "
// and msg.
func fieldError(status, code int, field, msg string) *Error {
	return &Error{Status: status, Errors: []Message{{Code: code, Message: field + ": " + msg}}}
}

// fieldOr is field, or the node's when the error names none.
func fieldOr(field string) string {
	if field == "" {
		return fieldNode
	}
	return field
}

// badField is a malformed or missing field of a request: 400.
func badField(field, format string, args ...any) *Error {
	return fieldError(http.StatusBadRequest, codeInvalidField, field, fmt.Sprintf(format, args...))
}

// badBody is a request body that is not one JSON object.
func badBody(status int, format string, args ...any) *Error {
	return fieldError(status, codeInvalidJSON, "body", fmt.Sprintf(format, args...))
}

// unavailable is a change refused for now; retryAfter is in seconds.
func unavailable(why, retryAfter string) *Error {
	e := fieldError(http.StatusServiceUnavailable, codeUnavailable, fieldNode, "changes are refused for now: "+why)
	e.header = http.Header{"Retry-After": {retryAfter}}
	return e
}

// kindAnswers is the status and code of each kind of bindings error.
var kindAnswers = map[bindings.ErrorKind]struct{ status, code int }{
	bindings.KindInvalid:     {http.StatusBadRequest, codeInvalidField},
	bindings.KindConflict:    {http.StatusConflict, codeConflict},
	bindings.KindConfigOwned: {http.StatusConflict, codeConfigOwned},
	bindings.KindHasBindings: {http.StatusConflict, codeHasBindings},
	bindings.KindNotFound:    {http.StatusNotFound, codeNotFound},
	bindings.KindInternal:    {http.StatusInternalServerError, codeInternal},
}

// errorOf maps any error a handler returns to the API's answer: its own
// errors as they are, a bindings error by its kind, anything else as the
// internal error it is.
func errorOf(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	var be *bindings.Error
	if !errors.As(err, &be) {
		return fieldError(http.StatusInternalServerError, codeInternal, fieldNode, err.Error())
	}
	if len(be.Problems) > 0 {
		return stateError(be)
	}
	if be.Kind == bindings.KindUnavailable {
		return unavailable(be.Reason, "5")
	}
	ans, ok := kindAnswers[be.Kind]
	if !ok {
		ans = kindAnswers[bindings.KindInternal]
	}
	return fieldError(ans.status, ans.code, fieldOr(be.Field), be.Reason)
}

// stateError answers the rules a change breaks, one message each, naming
// the field, the item and the reason: 409 if one is a conflict, else 400.
func stateError(be *bindings.Error) *Error {
	status, code := http.StatusBadRequest, codeInvalidState
	if be.Kind == bindings.KindConflict {
		status, code = http.StatusConflict, codeConflict
	}
	e := &Error{Status: status, Errors: make([]Message, len(be.Problems))}
	for i, p := range be.Problems {
		e.Errors[i] = Message{Code: code, Message: fieldOr(p.Field) + ": " + p.Item + ": " + p.Reason}
	}
	return e
}

// marshal is json.Marshal without HTML escaping: the API's text reads
// "->", not "\u003e".
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// writeResult answers a success with result.
func writeResult(w http.ResponseWriter, result any) error {
	raw, err := marshal(result)
	if err != nil {
		return fmt.Errorf("encode the result: %w", err)
	}
	writeEnvelope(w, http.StatusOK, Envelope{Success: true, Errors: []Message{}, Messages: []string{}, Result: raw})
	return nil
}

// writeError answers e, with its headers, and hands e to the request's
// log line.
func writeError(w http.ResponseWriter, e *Error) {
	if sw, ok := w.(*statusWriter); ok {
		sw.err = e
	}
	for k, v := range e.header {
		w.Header()[k] = v
	}
	writeEnvelope(w, e.Status, Envelope{Success: false, Errors: e.Errors, Messages: []string{}})
}

func writeEnvelope(w http.ResponseWriter, status int, env Envelope) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	enc.Encode(env)
}
