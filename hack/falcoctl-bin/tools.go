//go:build tools

// Package tools pins the falcoctl command the driver tests run as the reference client.
// It is never compiled; `go mod tidy` reads its imports.
package tools

import (
	_ "github.com/falcosecurity/falcoctl"
)
