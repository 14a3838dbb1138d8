package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/proxy/cdnconf"
)

// Check reads every file Start reads before it serves, as Start reads it,
// without a socket, the data plane, the store or etcd: the admin token,
// the cdn's certificates and keys, the origins' CA files, the QUIC
// stateless-reset key (when it exists: a start makes a missing one), the
// access log's file (opened only when it exists: a start creates it),
// etcd's TLS files and password. edgeproxy check runs it; the error names
// the key of every file that would stop a start.
func Check(cfg *config.Plan) error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	_, err := readToken(cfg.Admin.TokenFile)
	add(err)
	_, err = cfg.ProxyConfig()
	add(err)
	for i, s := range cfg.Proxy.Sites {
		if f := s.OriginTLS.CAFile; f != "" {
			if _, err := cdnconf.LoadCAFile(f); err != nil {
				add(fmt.Errorf("cdn.sites[%d].origin_tls.ca_file: %w", i, err))
			}
		}
	}
	add(proxy.CheckResetKeyFile(cfg.QUICResetKeyPath()))
	add(checkAccessLog(cfg.CDN.AccessLog))
	if e := cfg.Store.Etcd; e.Enabled() {
		_, err = etcdTLS(e.CAFile, e.CertFile, e.KeyFile, e.Endpoints)
		add(err)
		_, err = readPassword(e.PasswordFile)
		add(err)
	}
	return errors.Join(errs...)
}

// checkAccessLog checks that the access log's file opens for appending, or,
// missing, that its directory exists, without creating it.
func checkAccessLog(where string) error {
	switch where {
	case "off", "stderr", "":
		return nil
	}
	f, err := os.OpenFile(where, os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		return f.Close()
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cdn.access_log: %w", err)
	}
	if st, serr := os.Stat(filepath.Dir(where)); serr != nil || !st.IsDir() {
		return fmt.Errorf("cdn.access_log: %w", err) // as a start fails to create it
	}
	return nil
}
