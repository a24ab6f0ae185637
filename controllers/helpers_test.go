package controllers_test

import "k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

// unstructuredObj adapts a map for kstatus.
type unstructuredObj = unstructured.Unstructured
