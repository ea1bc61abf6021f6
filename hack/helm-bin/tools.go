//go:build tools

// Package tools pins the helm command the chart tests build.
// It is never compiled; `go mod tidy` reads its imports.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
