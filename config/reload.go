package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// RestartKeys lists the keys a reload cannot change, by key path: the
// fields of the schema tagged reload:"restart".
func RestartKeys() []string {
	var keys []string
	restartFields(reflect.TypeFor[Config](), "", func(key string, _ []int) { keys = append(keys, key) })
	return keys
}

// CheckReload refuses a next file that changes a key a reload cannot
// change, naming each.
func CheckReload(cur, next *Config) error {
	var errs []error
	a, b := reflect.ValueOf(cur).Elem(), reflect.ValueOf(next).Elem()
	restartFields(a.Type(), "", func(key string, index []int) {
		if !reflect.DeepEqual(a.FieldByIndex(index).Interface(), b.FieldByIndex(index).Interface()) {
			errs = append(errs, fmt.Errorf("%s: changing it needs a restart (a reload cannot apply it)", key))
		}
	})
	return errors.Join(errs...)
}

// restartFields calls f with the key path and field index of every field
// of struct type t tagged reload:"restart", looking into the sections
// (struct fields) that are not.
func restartFields(t reflect.Type, prefix string, f func(key string, index []int)) {
	for _, sf := range reflect.VisibleFields(t) {
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "" || len(sf.Index) != 1 {
			continue
		}
		key := prefix + name
		switch {
		case sf.Tag.Get("reload") == "restart":
			f(key, sf.Index)
		case sf.Type.Kind() == reflect.Struct && sf.Type != durationType:
			restartFields(sf.Type, key+".", func(k string, index []int) { f(k, append([]int{sf.Index[0]}, index...)) })
		}
	}
}
