package admin

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// TestClient: Do sends the token and the JSON body and decodes the result;
// an answer that is not a success is an *Error with its status, code and
// message; nothing answering is an *UnreachableError.
func TestClient(t *testing.T) {
	h, _ := newAPI(t, "s3cret")
	c := testClient(h)
	c.Token = "s3cret"
	var p Prefix
	if err := c.Do("POST", "/v1/prefixes", map[string]string{"cidr": "192.0.2.0/24", "service_id": "spectrum"}, &p); err != nil || p.CIDR != "192.0.2.0/24" || p.Source != "api" {
		t.Fatalf("Do: %+v %v", p, err)
	}
	err := c.Do("POST", "/v1/prefixes", map[string]string{"cidr": "192.0.2.0/24", "service_id": "cdn"}, nil)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 409 || ae.Code() != codeConflict || ae.Message() != "cidr: prefix 192.0.2.0/24 already exists (from api)" ||
		err.Error() != "409 Conflict: cidr: prefix 192.0.2.0/24 already exists (from api)" {
		t.Fatalf("a conflict: %#v %v", ae, err)
	}
	c.Token = ""
	if err := c.Do("DELETE", "/v1/prefixes/"+bindings.PrefixID(netip.MustParsePrefix("192.0.2.0/24")), nil, nil); !errors.As(err, &ae) || ae.Status != 401 || ae.Code() != codeUnauthorized {
		t.Fatalf("without the token: %v", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	far := NewClient(addr, "")
	var ue *UnreachableError
	if err := far.Do("GET", "/v1/prefixes", nil, nil); !errors.As(err, &ue) || ue.Base != "http://"+addr {
		t.Fatalf("nothing listening: %v", err)
	}
}
