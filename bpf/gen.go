// Package bpf holds edgeproxy's sk_lookup program (dispatch.c) and the Go
// bindings bpf2go generates for it. The generated object is committed, so
// building needs no clang; `make generate` rebuilds it with Debian's clang (the
// version .ci/run pins) and `make check-bpf` verifies that the committed
// object matches the source byte for byte.
//
// The build tag edgeproxy_nextlayout selects a second object of another
// layout (one map more, the next schema version), which only the upgrade
// tests build: a live upgrade must move across a layout change and back.
//
// Only package dispatch imports this package.
package bpf

// The kernel's headers include <asm/types.h>, which Debian keeps under the
// host's multiarch directory; clang, compiling for the bpf target, does not
// look there by itself. The directory is asked of clang (x86_64-linux-gnu,
// aarch64-linux-gnu, ...), not written down for one architecture.
//
//go:generate sh -c "go tool bpf2go -cc clang -cflags \"-O2 -g -Wall -Werror -I/usr/include/$(clang -print-multiarch)\" -target bpfel -tags !edgeproxy_nextlayout -type kind -type app_kind -type verdict Dispatch dispatch.c"
//go:generate sh -c "go tool bpf2go -cc clang -cflags \"-O2 -g -Wall -Werror -I/usr/include/$(clang -print-multiarch) -DNEXT_LAYOUT\" -target bpfel -tags edgeproxy_nextlayout -output-stem dispatch_next -type kind -type app_kind -type verdict Dispatch dispatch.c"
