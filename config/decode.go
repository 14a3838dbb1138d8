package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// UnmarshalYAML accepts a plain string or the object form.
func (o *Origin) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		o.URL, o.Weight = n.Value, 0
		return nil
	}
	type plain Origin // its keys were checked by checkNode
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*o = Origin(p)
	return nil
}

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a duration (e.g. 30s)", n.Value)
	}
	*d = Duration(v)
	return nil
}

// Load reads a configuration file and returns its plan.
func Load(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a configuration and returns its plan. Decoding is strict:
// an unknown key or a value of the wrong type is an error naming its key
// path (checkNode), before anything is decoded.
func Parse(b []byte) (*Plan, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decode: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode: more than one YAML document")
	}
	c := Default()
	if doc.Kind != 0 {
		w := &walker{budget: maxNodes}
		w.check(&doc, reflect.TypeFor[Config](), "")
		if err := errors.Join(w.errs...); err != nil {
			return nil, err
		}
		if err := doc.Decode(c); err != nil {
			return nil, fmt.Errorf("decode: %w", err)
		}
	}
	p, err := c.Plan()
	if err != nil {
		return nil, err
	}
	p.empty = isEmpty(&doc)
	return p, nil
}

// isEmpty reports whether a document declares nothing: no document at all
// (nothing but comments), null, or an empty mapping.
func isEmpty(doc *yaml.Node) bool {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	switch {
	case n.Kind == 0, n.Kind == yaml.DocumentNode && len(n.Content) == 0:
		return true
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return true
	case n.Kind == yaml.MappingNode && len(n.Content) == 0:
		return true
	}
	return false
}

// maxNodes bounds the nodes checkNode visits, aliases followed: a file
// of aliases of aliases is refused instead of walked.
const maxNodes = 1 << 20

// walker checks a YAML document against the schema's types, naming each
// error by its key path: an unknown key (`spectrum.apps[0].prot: unknown
// key`), a value of the wrong kind (`node: must be a string`).
type walker struct {
	budget int
	errs   []error
}

var (
	durationType = reflect.TypeFor[Duration]()
	originType   = reflect.TypeFor[Origin]()
)

func (w *walker) fail(path, format string, args ...any) {
	if path == "" {
		path = "the file"
	}
	w.errs = append(w.errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
}

func (w *walker) check(n *yaml.Node, t reflect.Type, path string) {
	if w.budget--; w.budget < 0 {
		if w.budget == -1 {
			w.fail(path, "the document has more than %d nodes (aliases counted)", maxNodes)
		}
		return
	}
	switch {
	case n.Kind == yaml.DocumentNode:
		if len(n.Content) == 1 {
			w.check(n.Content[0], t, path)
		}
		return
	case n.Kind == yaml.AliasNode:
		w.check(n.Alias, t, path)
		return
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null":
		return // the zero value, or the default
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			w.fail(path, "must be a duration (e.g. 30s)")
		} else if err := new(Duration).UnmarshalYAML(n); err != nil {
			w.fail(path, "%v", err)
		}
		return
	case t == originType && n.Kind == yaml.ScalarNode:
		return // the URL form
	}
	switch t.Kind() {
	case reflect.Pointer:
		w.check(n, t.Elem(), path)
	case reflect.Struct:
		w.mapping(n, t, path)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.fail(path, "must be a mapping of keys")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			w.scalar(k, t.Key(), path)
			w.check(n.Content[i+1], t.Elem(), path+"."+k.Value)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(path, "must be a list")
			return
		}
		for i, e := range n.Content {
			w.check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		w.scalar(n, t, path)
	}
}

// mapping checks a mapping's keys against the fields of struct type t.
func (w *walker) mapping(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.MappingNode {
		w.fail(path, "must be a mapping of keys")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			w.merge(v, t, path)
			continue
		}
		key := path + "." + k.Value
		if path == "" {
			key = k.Value
		}
		f, ok := fieldOf(t, k.Value)
		if !ok || k.Kind != yaml.ScalarNode {
			w.fail(key, "unknown key")
			continue
		}
		w.check(v, f.Type, key)
	}
}

// merge checks the mappings a merge key (<<) brings in.
func (w *walker) merge(v *yaml.Node, t reflect.Type, path string) {
	if v.Kind == yaml.SequenceNode {
		for _, e := range v.Content {
			w.check(e, t, path)
		}
		return
	}
	w.check(v, t, path)
}

// fieldOf finds the field of struct type t whose yaml key is key.
func fieldOf(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == key && f.IsExported() {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// scalar checks that n decodes into a value of type t.
func (w *walker) scalar(n *yaml.Node, t reflect.Type, path string) {
	want := map[reflect.Kind]string{
		reflect.String: "a string", reflect.Bool: "true or false",
		reflect.Int: "an integer", reflect.Int64: "an integer",
		reflect.Float64: "a number",
	}[t.Kind()]
	if want == "" {
		want = "a " + t.Kind().String()
	}
	if n.Kind != yaml.ScalarNode || n.Decode(reflect.New(t).Interface()) != nil {
		w.fail(path, "must be %s", want)
	}
}
