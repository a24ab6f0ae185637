// Package v1alpha1 contains the API types of the customers.partnerops.io group.
//
// Every kind is cluster-scoped: a partner runs many customer accounts on one cluster,
// and customers own namespaces (projects), so none of these objects belongs in one.
//
// +kubebuilder:object:generate=true
// +groupName=customers.partnerops.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of these kinds.
	GroupVersion = schema.GroupVersion{Group: "customers.partnerops.io", Version: "v1alpha1"}

	// SchemeBuilder registers these kinds with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds these kinds to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
