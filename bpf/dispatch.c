//go:build ignore

// dispatch.c: the sk_lookup program of edgeproxy.
//
// For every TCP SYN and UDP datagram that finds no established or connected
// socket, the kernel runs this program in the receiving network namespace.
// It mirrors the binding rules of docs/design.md step by step:
//
//  1. The owner of the destination: the longest match among address bindings
//     and, for the packet's protocol and port, port-scoped bindings. A tie of
//     lengths goes to the port-scoped binding. No match: the kernel decides.
//  2. The owner's verdict:
//       PASS   the kernel's normal lookup decides (magic transit);
//       PORTS  a (protocol, port) set maps to a label (cdn), else refuse;
//       APPS   the longest app edge that serves the port, single port over
//              range over any port at equal length, maps to a label
//              (spectrum), else refuse.
//  3. The label's socket from the sockmap. No socket: drop and count a miss
//     (fail closed). A socket that does not fit: drop and count an error.
//
// Every outcome after step 1 is also charged to the binding found there, in
// its slot of binding_counters: steered (a socket was assigned, or a pass
// owner handed the packet to the kernel), refused, or missed.
//
// Every table is keyed by a generation bit. The writer fills the inactive
// generation, then flips state.gen with one store, so a lookup sees either
// the old table or the new one, never a mix.
//
// Bump SCHEMA_VERSION whenever a map's layout or meaning changes: a process
// refuses pinned state of another schema (the Go side reads the number from
// this object, so there is one place to change).

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define SCHEMA_VERSION 2

#define AF_INET 2
#define AF_INET6 10

#define MAX_LABELS 64
#define MAX_OWNERS 256
/* The bindings one table holds, both families together. The dispatcher
 * sizes bind4, bind6 and binding_counters from its own capacity at load;
 * these are the object's defaults. */
#define BINDING_CAPACITY (1 << 17)
#define MAX_BINDINGS (2 * BINDING_CAPACITY) /* per family, both generations */
#define MAX_BINDING_SLOTS (2 * BINDING_CAPACITY) /* both generations */
#define MAX_APP_ENTRIES (1 << 20) /* per family, both generations */
#define MAX_PORT_ENTRIES (1 << 16) /* both generations */

enum kind {
	KIND_NONE = 0, /* unknown owner: fail closed */
	KIND_PASS = 1,
	KIND_PORTS = 2,
	KIND_APPS = 3,
};

enum app_kind {
	APP_SINGLE = 1,
	APP_RANGE = 2,
	APP_ANY = 3,
};

/* portinfo flags, low 16 bits; the range class sits in the high 16 bits. */
#define PI_PORT_SCOPED 1 /* some port-scoped binding uses this (proto, port) */
#define PI_SINGLE_APP 2 /* some single-port app serves this (proto, port) */

enum verdict {
	V_NO_MATCH = 0, /* outside every binding: kernel */
	V_PASS = 1, /* owner passes: kernel */
	V_REFUSE = 2, /* owner does not serve the port */
	V_STEER = 3, /* a socket was assigned */
	V_FAIL = 4, /* label without socket, or socket did not fit */
	V_MAX = 5,
};

struct bind4_key {
	__u32 prefixlen;
	__u8 gen;
	__u8 proto; /* 0: address binding */
	__u16 port; /* 0: address binding */
	__u32 addr; /* network byte order */
};

struct bind6_key {
	__u32 prefixlen;
	__u8 gen;
	__u8 proto;
	__u16 port;
	__u32 addr[4];
};

struct bind_val {
	__u32 owner;
	__u32 plen; /* prefix length of the address part */
	__u32 slot; /* the binding's counters in binding_counters */
};

struct app4_key {
	__u32 prefixlen;
	__u8 gen;
	__u8 proto;
	__u8 kind; /* enum app_kind */
	__u8 owner;
	__u32 port; /* single: the port; range: the class; any: 0 */
	__u32 addr;
};

struct app6_key {
	__u32 prefixlen;
	__u8 gen;
	__u8 proto;
	__u8 kind;
	__u8 owner;
	__u32 port;
	__u32 addr[4];
};

struct app_val {
	__u32 label;
	__u32 plen; /* prefix length of the app's edge */
};

struct port_key {
	__u8 gen;
	__u8 owner;
	__u8 proto;
	__u8 pad;
	__u32 port;
};

struct state {
	__u32 gen; /* the active generation, 0 or 1 */
};

struct meta {
	__u64 magic;
	__u32 schema;
	__u32 pad;
};

struct label_counters {
	__u64 lookups; /* the program chose this label */
	__u64 misses; /* ... and no socket was registered */
	__u64 errors; /* ... and the socket did not fit the packet */
};

/* One binding's outcomes, charged to the binding step 1 found. */
struct binding_count {
	__u64 steered; /* a socket was assigned, or a pass owner passed */
	__u64 refused; /* the owner does not serve the port */
	__u64 missed; /* a label without socket, or a socket that did not fit */
};

struct label_name {
	char name[32];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_BINDINGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bind4_key);
	__type(value, struct bind_val);
} bind4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_BINDINGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bind6_key);
	__type(value, struct bind_val);
} bind6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_APP_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct app4_key);
	__type(value, struct app_val);
} app4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_APP_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct app6_key);
	__type(value, struct app_val);
} app6 SEC(".maps");

/* The (owner, protocol, port) -> label sets of PORTS owners. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORT_ENTRIES);
	__type(key, struct port_key);
	__type(value, __u32);
} ports SEC(".maps");

/* Per generation, protocol (0 tcp, 1 udp) and port: flags and range class. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * 2 * 65536);
	__type(key, __u32);
	__type(value, __u32);
} portinfo SEC(".maps");

/* Per generation and owner: enum kind. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MAX_OWNERS);
	__type(key, __u32);
	__type(value, __u32);
} owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct state);
} state SEC(".maps");

/* Identity of pinned state; the program never reads it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct meta);
} meta SEC(".maps");

/* Label index -> name, so that a new process keeps the indices. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_LABELS);
	__type(key, __u32);
	__type(value, struct label_name);
} labels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, MAX_LABELS);
	__type(key, __u32);
	__type(value, __u64);
} sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_LABELS);
	__type(key, __u32);
	__type(value, struct label_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, V_MAX);
	__type(key, __u32);
	__type(value, __u64);
} verdicts SEC(".maps");

/* Per binding slot (bind_val.slot) and per CPU. The dispatcher gives each
 * binding identity (prefix, protocol, port) a slot while it is in either
 * generation, and zeroes a slot before it gives it to another binding. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_BINDING_SLOTS);
	__type(key, __u32);
	__type(value, struct binding_count);
} binding_counters SEC(".maps");

#ifdef NEXT_LAYOUT
/* A build of the layout after this one: one map more and the next schema
 * version. The upgrade tests build the binary with it (go build -tags
 * edgeproxy_nextlayout) to prove that a live upgrade moves across a layout
 * change and back. */
#undef SCHEMA_VERSION
#define SCHEMA_VERSION 3
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lookups SEC(".maps");
#endif

/* The schema version, read by the Go side from the object's .rodata. */
volatile const __u32 schema_version = SCHEMA_VERSION;

/* Keep the enums in BTF so that bpf2go generates Go constants for them. */
const enum kind *unused_kind __attribute__((unused));
const enum app_kind *unused_app_kind __attribute__((unused));
const enum verdict *unused_verdict __attribute__((unused));

/* count counts verdict v, and charges it to the binding's counters bc
 * (NULL: no binding matched). */
static __always_inline int count(struct binding_count *bc, __u32 v, int ret)
{
	__u64 *n = bpf_map_lookup_elem(&verdicts, &v);
	if (n)
		*n += 1;
	if (bc) {
		if (v == V_STEER || v == V_PASS)
			bc->steered++;
		else if (v == V_REFUSE)
			bc->refused++;
		else if (v == V_FAIL)
			bc->missed++;
	}
#ifdef NEXT_LAYOUT
	__u32 zero = 0;
	__u64 *l = bpf_map_lookup_elem(&lookups, &zero);
	if (l)
		*l += 1;
#endif
	return ret;
}

static __always_inline int assign(struct bpf_sk_lookup *ctx, struct binding_count *bc, __u32 label)
{
	struct label_counters *c = bpf_map_lookup_elem(&counters, &label);
	struct bpf_sock *sk;
	long err;

	if (c)
		c->lookups++;
	sk = bpf_map_lookup_elem(&sockets, &label);
	if (!sk) {
		if (c)
			c->misses++;
		return count(bc, V_FAIL, SK_DROP);
	}
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		if (c)
			c->errors++;
		return count(bc, V_FAIL, SK_DROP);
	}
	return count(bc, V_STEER, SK_PASS);
}

/* better reports whether candidate c beats the current best b. */
static __always_inline int better(const struct app_val *c, const struct app_val *b)
{
	return c && (!b || c->plen > b->plen);
}

SEC("sk_lookup")
int edgeproxy_dispatch(struct bpf_sk_lookup *ctx)
{
	const __u32 zero = 0;
	struct state *st;
	struct bind_val *b = NULL, *bp;
	struct binding_count *bc;
	struct app_val *a = NULL, *ac;
	__u32 proto = ctx->protocol;
	__u32 port = ctx->local_port;
	__u32 idx, flags = 0, gen, owner, *kind, *label;

	st = bpf_map_lookup_elem(&state, &zero);
	if (!st)
		return SK_PASS;
	gen = st->gen & 1;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SK_PASS;
	if (port > 65535)
		return SK_PASS;

	idx = (gen << 17) | ((proto == IPPROTO_UDP) << 16) | port;
	label = bpf_map_lookup_elem(&portinfo, &idx);
	if (label)
		flags = *label;

	/* 1. The owner of the destination. */
	if (ctx->family == AF_INET) {
		struct bind4_key k = {
			.prefixlen = 32 + 32,
			.gen = gen,
			.addr = ctx->local_ip4,
		};
		b = bpf_map_lookup_elem(&bind4, &k);
		if (flags & PI_PORT_SCOPED) {
			k.proto = proto;
			k.port = port;
			bp = bpf_map_lookup_elem(&bind4, &k);
			if (bp && (!b || bp->plen >= b->plen))
				b = bp;
		}
	} else if (ctx->family == AF_INET6) {
		struct bind6_key k = {
			.prefixlen = 32 + 128,
			.gen = gen,
		};
		k.addr[0] = ctx->local_ip6[0];
		k.addr[1] = ctx->local_ip6[1];
		k.addr[2] = ctx->local_ip6[2];
		k.addr[3] = ctx->local_ip6[3];
		b = bpf_map_lookup_elem(&bind6, &k);
		if (flags & PI_PORT_SCOPED) {
			k.proto = proto;
			k.port = port;
			bp = bpf_map_lookup_elem(&bind6, &k);
			if (bp && (!b || bp->plen >= b->plen))
				b = bp;
		}
	} else {
		return SK_PASS;
	}
	if (!b)
		return count(NULL, V_NO_MATCH, SK_PASS);
	idx = b->slot;
	bc = bpf_map_lookup_elem(&binding_counters, &idx);

	/* 2. The owner's verdict. */
	owner = b->owner & (MAX_OWNERS - 1);
	idx = gen * MAX_OWNERS + owner;
	kind = bpf_map_lookup_elem(&owners, &idx);
	if (!kind)
		return count(bc, V_REFUSE, SK_DROP);

	switch (*kind) {
	case KIND_PASS:
		return count(bc, V_PASS, SK_PASS);

	case KIND_PORTS: {
		struct port_key pk = {
			.gen = gen,
			.owner = owner,
			.proto = proto,
			.port = port,
		};
		label = bpf_map_lookup_elem(&ports, &pk);
		if (!label)
			return count(bc, V_REFUSE, SK_DROP);
		return assign(ctx, bc, *label);
	}

	case KIND_APPS:
		if (ctx->family == AF_INET) {
			struct app4_key k = {
				.prefixlen = 64 + 32,
				.gen = gen,
				.proto = proto,
				.owner = owner,
				.addr = ctx->local_ip4,
			};
			if (flags & PI_SINGLE_APP) {
				k.kind = APP_SINGLE;
				k.port = port;
				a = bpf_map_lookup_elem(&app4, &k);
			}
			if (flags >> 16) {
				k.kind = APP_RANGE;
				k.port = flags >> 16;
				ac = bpf_map_lookup_elem(&app4, &k);
				if (better(ac, a))
					a = ac;
			}
			k.kind = APP_ANY;
			k.port = 0;
			ac = bpf_map_lookup_elem(&app4, &k);
			if (better(ac, a))
				a = ac;
		} else {
			struct app6_key k = {
				.prefixlen = 64 + 128,
				.gen = gen,
				.proto = proto,
				.owner = owner,
			};
			k.addr[0] = ctx->local_ip6[0];
			k.addr[1] = ctx->local_ip6[1];
			k.addr[2] = ctx->local_ip6[2];
			k.addr[3] = ctx->local_ip6[3];
			if (flags & PI_SINGLE_APP) {
				k.kind = APP_SINGLE;
				k.port = port;
				a = bpf_map_lookup_elem(&app6, &k);
			}
			if (flags >> 16) {
				k.kind = APP_RANGE;
				k.port = flags >> 16;
				ac = bpf_map_lookup_elem(&app6, &k);
				if (better(ac, a))
					a = ac;
			}
			k.kind = APP_ANY;
			k.port = 0;
			ac = bpf_map_lookup_elem(&app6, &k);
			if (better(ac, a))
				a = ac;
		}
		if (!a)
			return count(bc, V_REFUSE, SK_DROP);
		return assign(ctx, bc, a->label);
	}

	/* An owner without a kind: fail closed. */
	return count(bc, V_REFUSE, SK_DROP);
}

char _license[] SEC("license") = "Dual BSD/GPL";
