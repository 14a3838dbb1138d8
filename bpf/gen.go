// Package bpf holds edgeproxy's sk_lookup program (dispatch.c) and the Go
// bindings bpf2go generates for it. The generated object is committed, so
// building needs no clang; `make generate` rebuilds it with Debian's clang and
// `make check-bpf` verifies that the committed object matches the source.
//
// The build tag edgeproxy_nextlayout selects a second object of another
// layout (one map more, the next schema version), which only the upgrade
// tests build: a live upgrade must move across a layout change and back.
//
// Only package dispatch imports this package.
package bpf

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -tags !edgeproxy_nextlayout -type kind -type app_kind -type verdict Dispatch dispatch.c
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -DNEXT_LAYOUT" -target bpfel -tags edgeproxy_nextlayout -output-stem dispatch_next -type kind -type app_kind -type verdict Dispatch dispatch.c
