module github.com/edgeproxy/edgeproxy

go 1.26.0

require (
	github.com/cilium/ebpf v0.22.0
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/sys v0.50.0
)

require github.com/google/go-cmp v0.7.0

tool github.com/cilium/ebpf/cmd/bpf2go
