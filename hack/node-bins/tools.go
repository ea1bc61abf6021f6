//go:build tools

// Package tools pins the node's container runtime pieces the test harness builds:
// containerd 2.x with its runc shim (Debian's containerd 1.6 is too old for the kubelet) and
// the CNI loopback plugin (the node's pods share the host network; see
// crates/falco-testenv/src/node.rs). It is never compiled; `go mod tidy` reads its imports.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
)
