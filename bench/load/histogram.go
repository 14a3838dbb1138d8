// Package load holds edgebench's load generators: an open-loop (fixed-rate)
// HTTP/1.1, HTTP/2 and HTTP/3 generator, a TCP connection-rate generator and
// a UDP request-response and packet-rate generator, each with an HDR-style
// latency histogram. The harness's scenarios call them in-process; the
// `edgebench load` command runs them by hand (docs/bench.md).
package load

import (
	"fmt"
	"math"
	"math/bits"
	"time"
)

// The histogram's layout: values (nanoseconds) below 2^(subBits+1) have a
// bucket each; above, every power of two is split into 2^subBits linear
// sub-buckets, so a bucket is at most 1/2^subBits = 0.78% of its value wide
// and the midpoint reported is within 0.4% of any value in it. Values above
// maxValue (about 68.7 s) are clamped to it.
const (
	subBits   = 7
	subCount  = 1 << subBits     // sub-buckets per power of two above the linear part
	linear    = 2 << subBits     // values below this are exact
	maxValue  = int64(1)<<36 - 1 // ≈ 68.7 s in ns
	numCounts = linear + (36-subBits-1)*subCount
)

// Histogram is an HDR-style latency histogram: log-linear buckets from 1 ns
// to about 68 s with better than 1% precision, fixed size (about 30 KB),
// O(1) to record. It is not safe for concurrent use: give each goroutine its
// own and Merge them.
type Histogram struct {
	counts   [numCounts]int64
	total    int64
	min, max int64
	sum      float64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{min: math.MaxInt64} }

func index(v int64) int {
	if v < linear {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - (subBits + 1) // ≥ 1
	return linear + (shift-1)*subCount + int(v>>shift) - subCount
}

// bounds returns the lowest value of bucket i and its width.
func bounds(i int) (low, width int64) {
	if i < linear {
		return int64(i), 1
	}
	j := i - linear
	shift := j/subCount + 1
	return int64(j%subCount+subCount) << shift, int64(1) << shift
}

// Record adds one value; negative durations count as 0.
func (h *Histogram) Record(d time.Duration) { h.recordN(int64(d), 1) }

func (h *Histogram) recordN(v, n int64) {
	if v < 0 {
		v = 0
	}
	if v > maxValue {
		v = maxValue
	}
	if h.total == 0 && h.min == 0 && h.max == 0 {
		h.min = math.MaxInt64 // the zero Histogram is usable too
	}
	h.counts[index(v)] += n
	h.total += n
	h.sum += float64(v) * float64(n)
	h.min = min(h.min, v)
	h.max = max(h.max, v)
}

// RecordCorrected adds d and corrects for coordinated omission as
// HdrHistogram's recordValueWithExpectedInterval does: when d is longer than
// the interval at which values were expected (a closed-loop client that
// waited for a stalled server instead of sending), it also records the
// values the requests that would have been sent meanwhile would have seen,
// d−interval, d−2·interval, … down to interval. An open-loop generator that
// measures from the intended send time needs no correction.
func (h *Histogram) RecordCorrected(d, expectedInterval time.Duration) {
	h.Record(d)
	if expectedInterval <= 0 {
		return
	}
	for missing := d - expectedInterval; missing >= expectedInterval; missing -= expectedInterval {
		h.Record(missing)
	}
}

// Count is how many values were recorded.
func (h *Histogram) Count() int64 { return h.total }

// Min and Max are the smallest and largest values recorded (exact); Mean is
// their average. All are 0 for an empty histogram.
func (h *Histogram) Min() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.min)
}

// Max: see Min.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean: see Min.
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.total))
}

// Percentile returns the value below which q percent of the values lie,
// q in [0, 100] (Percentile(99.9) is p99.9), within the histogram's
// precision: the midpoint of the bucket holding the ⌈q/100·count⌉-th value,
// kept within [Min, Max]. It is 0 for an empty histogram.
func (h *Histogram) Percentile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	q = min(max(q, 0), 100)
	rank := int64(math.Ceil(q / 100 * float64(h.total)))
	rank = max(rank, 1)
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := bounds(i)
			v := low + (width-1)/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

// Merge adds other's values into h.
func (h *Histogram) Merge(other *Histogram) {
	if other == nil || other.total == 0 {
		return
	}
	if h.total == 0 {
		h.min = math.MaxInt64
	}
	for i, c := range other.counts {
		h.counts[i] += c
	}
	h.total += other.total
	h.sum += other.sum
	h.min = min(h.min, other.min)
	h.max = max(h.max, other.max)
}

// Reset empties h.
func (h *Histogram) Reset() { *h = Histogram{min: math.MaxInt64} }

// Summary is the one-line report the CLI prints: count, p50, p90, p99,
// p99.9 and max.
func (h *Histogram) Summary() string {
	return fmt.Sprintf("p50 %v  p90 %v  p99 %v  p99.9 %v  max %v",
		round(h.Percentile(50)), round(h.Percentile(90)), round(h.Percentile(99)),
		round(h.Percentile(99.9)), round(h.Max()))
}

// round keeps three significant digits or so for reading.
func round(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d >= 10*time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	default:
		return d.Round(10 * time.Nanosecond)
	}
}
