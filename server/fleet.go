package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/fleet"
)

// joinFleet makes the node one of the fleet of store.etcd, once its own
// state (the last it applied, from its own store) serves: the node
// follows the fleet from there.
func (s *Server) joinFleet() error {
	e := s.cfg.Store.Etcd
	if !e.Enabled() {
		return nil
	}
	tlsConf, err := etcdTLS(e.CAFile, e.CertFile, e.KeyFile, e.Endpoints)
	if err != nil {
		return err
	}
	password, err := readPassword(e.PasswordFile)
	if err != nil {
		return err
	}
	s.fleet, err = fleet.Start(fleet.Options{
		Node: s.cfg.Node, Labels: s.cfg.Labels, Endpoints: e.Endpoints, Prefix: e.Prefix,
		DialTimeout: time.Duration(e.DialTimeout), NodeTTL: time.Duration(e.NodeTTL),
		TLS: tlsConf, Username: e.Username, Password: password, Version: s.version,
		AuditRetention: s.cfg.Store.AuditRetention,
		Manager:        s.Bindings, Registerer: s.Registry, Logger: s.log.With("component", "fleet"),
	})
	return err
}

// readPassword reads etcd's password; an empty path means none.
func readPassword(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("store.etcd.password_file: %w", err)
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return "", fmt.Errorf("store.etcd.password_file: %s is empty", path)
	}
	return pw, nil
}

// etcdTLS builds the TLS configuration to etcd: nil for http:// endpoints
// without files.
func etcdTLS(caFile, certFile, keyFile string, endpoints []string) (*tls.Config, error) {
	secure := false
	for _, ep := range endpoints {
		secure = secure || strings.HasPrefix(ep, "https://")
	}
	if !secure && caFile == "" && certFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("store.etcd.ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("store.etcd.ca_file: %s holds no PEM certificate", caFile)
		}
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("store.etcd.cert_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// fleetView is what GET /v1/nodes and GET /v1/fleet show; nil on a single
// node.
func (s *Server) fleetView() *admin.FleetView {
	if s.fleet == nil {
		return nil
	}
	return &admin.FleetView{
		Nodes:   func() any { return s.fleet.Nodes() },
		Summary: func() any { return s.fleet.Summary() },
	}
}

// auditLog is what GET /v1/audit lists: the fleet's audit log, or the
// node's own store's; nil, which the API answers with 404, on a node that
// keeps none (no store.path).
func (s *Server) auditLog() func(ctx context.Context, since int64, limit int) ([]bindings.AuditEntry, error) {
	switch {
	case s.fleet != nil:
		return s.fleet.Audit
	case s.store != nil:
		return func(_ context.Context, since int64, limit int) ([]bindings.AuditEntry, error) {
			return s.store.Audit(since, limit)
		}
	}
	return nil
}
