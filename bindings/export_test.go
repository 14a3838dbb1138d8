package bindings

import "github.com/edgeproxy/edgeproxy/dispatch"

// Amended is amended, for the benchmarks.
func (o *Ownership) Amended(remove, add []dispatch.Binding) *Ownership { return o.amended(remove, add) }

// OwnerOf is the dispatcher's owner of a service, for the benchmarks.
func OwnerOf(s Service) dispatch.Owner { return owners[s] }
