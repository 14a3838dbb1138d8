package proxy

import "sync"

// h3Head is an HTTP/3 request's field section (reqHead: the checks HTTP/2
// shares) with the bound of this connection's SETTINGS.
type h3Head struct {
	reqHead
	maxSize int
}

var h3Heads = sync.Pool{New: func() any { return new(h3Head) }}

// release puts the head back in its pool, with its request unless the
// request was taken.
func (h *h3Head) release() {
	h.reset()
	h.maxSize = 0
	h3Heads.Put(h)
}

// field takes one decoded field of the request's head.
func (h *h3Head) field(name, v string) {
	h.size += len(name) + len(v) + 32
	if h.size > h.maxSize {
		h.tooLarge = true
	}
	if h.tooLarge || h.malformed != "" {
		return
	}
	h.reqHead.field(name, v, false)
}
