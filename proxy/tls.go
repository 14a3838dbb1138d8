package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"strings"

	"github.com/edgeproxy/edgeproxy/internal/netaddr"
	"github.com/edgeproxy/edgeproxy/proxy/cdnconf"
)

// Certificate is a certificate chain with its key (cdnconf.Certificate).
type Certificate = cdnconf.Certificate

// certStore picks certificates by SNI, among the sites that exist on the
// edge address the client dialled.
type certStore struct {
	exact map[string]*tls.Certificate
	wild  map[string]*tls.Certificate // "example.com" for *.example.com
	def   *tls.Certificate
}

var errNoCertificate = errors.New("no certificate for this name on this address")

func newCertStore(certs []Certificate) (*certStore, error) {
	s := &certStore{exact: map[string]*tls.Certificate{}, wild: map[string]*tls.Certificate{}}
	for i := range certs {
		c := &certs[i]
		leaf := c.Leaf
		if leaf == nil {
			var err error
			if leaf, err = x509.ParseCertificate(c.Certificate.Certificate[0]); err != nil {
				return nil, err
			}
			c.Leaf = leaf
		}
		for _, name := range certNames(leaf) {
			name = strings.ToLower(name)
			if w, ok := strings.CutPrefix(name, "*."); ok {
				if _, dup := s.wild[w]; !dup {
					s.wild[w] = &c.Certificate
				}
			} else if _, dup := s.exact[name]; !dup {
				s.exact[name] = &c.Certificate
			}
		}
		if c.Default || (s.def == nil && i == 0) {
			s.def = &c.Certificate
		}
	}
	return s, nil
}

func certNames(leaf *x509.Certificate) []string {
	if len(leaf.DNSNames) > 0 {
		return leaf.DNSNames
	}
	if leaf.Subject.CommonName != "" {
		return []string{leaf.Subject.CommonName}
	}
	return nil
}

// forName returns the certificate for an SNI name, as TLS names match: a
// wildcard covers one label.
func (s *certStore) forName(name string) *tls.Certificate {
	if c := s.exact[name]; c != nil {
		return c
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		return s.wild[parent]
	}
	return nil
}

// getCertificate is tls.Config.GetCertificate: the certificate of the SNI
// name if a site with that name exists on the dialled address; else the
// default certificate; else the handshake fails.
func (p *Proxy) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	st := p.state.Load()
	name := normalizeHost(hello.ServerName)
	edge := edgeOf(hello.Conn)
	if name != "" && st.router.lookup(name, edge) != nil {
		if c := st.certs.forName(name); c != nil {
			return c, nil
		}
	}
	if st.certs.def != nil {
		return st.certs.def, nil
	}
	return nil, errNoCertificate
}

// edgeOf returns the local address of a connection: the edge address the
// client dialled (sk_lookup keeps it).
func edgeOf(c net.Conn) netip.Addr {
	if c == nil {
		return netip.Addr{}
	}
	return netaddr.AddrPort(c.LocalAddr()).Addr()
}
