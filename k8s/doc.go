// Package k8s runs Kubernetes' own storage tests (the generic ones
// k8s.io/apiserver/pkg/storage/testing exports, on the API server's etcd3
// store) against a cairn member: the storage layer Kubernetes keeps all
// its state through, on cairn instead of etcd. It is a module of its own
// so that cairn itself does not depend on Kubernetes; it drives the cairn
// binary, built from the module above.
package k8s
