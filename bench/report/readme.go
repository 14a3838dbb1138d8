package report

import (
	"bytes"
)

// The README's benchmark section lies between these markers.
const (
	BeginMarker = "<!-- bench:begin -->"
	EndMarker   = "<!-- bench:end -->"
)

// performanceHeading is where the markers go when the README has none.
const performanceHeading = "## Performance"

// UpdateReadme replaces what lies between the markers with section and
// leaves the rest of readme as it is. Without markers it puts them, around
// section, right after the "## Performance" heading (and adds that
// heading at the end when there is none). Running it again with the same
// section changes nothing.
func UpdateReadme(readme, section []byte) []byte {
	body := append([]byte(BeginMarker+"\n"), section...)
	if len(section) > 0 && section[len(section)-1] != '\n' {
		body = append(body, '\n')
	}
	body = append(body, EndMarker...)

	if i := bytes.Index(readme, []byte(BeginMarker)); i >= 0 {
		if j := bytes.Index(readme[i:], []byte(EndMarker)); j >= 0 {
			j += i + len(EndMarker)
			out := append([]byte{}, readme[:i]...)
			out = append(out, body...)
			return append(out, readme[j:]...)
		}
	}
	// no markers (or a begin without an end): insert them.
	at := -1
	for off := 0; off < len(readme); {
		end := bytes.IndexByte(readme[off:], '\n')
		line := readme[off:]
		if end >= 0 {
			line = readme[off : off+end]
		}
		if string(bytes.TrimRight(line, " \r")) == performanceHeading {
			at = off + len(line)
			if end >= 0 {
				at++
			}
			break
		}
		if end < 0 {
			break
		}
		off += end + 1
	}
	out := []byte{}
	if at < 0 {
		out = append(out, readme...)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		if len(out) > 0 {
			out = append(out, '\n')
		}
		out = append(out, performanceHeading+"\n\n"...)
		out = append(out, body...)
		return append(out, '\n')
	}
	out = append(out, readme[:at]...)
	if at > 0 && readme[at-1] != '\n' {
		out = append(out, '\n')
	}
	out = append(out, '\n')
	out = append(out, body...)
	out = append(out, '\n')
	return append(out, readme[at:]...)
}
