// Package scenarios holds the benchmark scenarios: each file registers its
// group's with the harness (http.go, l4.go, dispatch.go, change.go).
package scenarios
