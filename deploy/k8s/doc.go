// Package k8s holds the Kubernetes manifests for the edgefleet server and
// its Mosquitto broker (apply with `kubectl apply -k deploy/k8s`). It has no
// Go API: its test checks the manifests where no cluster runs.
package k8s
