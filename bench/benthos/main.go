// Command benthos is Benthos v4.27.0 exactly as its cmd/benthos builds it (every component),
// from a module of our own: Benthos's go.mod has a replace directive, so
// `go install github.com/benthosdev/benthos/v4/cmd/benthos@v4.27.0` refuses to build it.
// Built with -tags keepalive it also raises net/http's idle connections per host (keepalive.go).
package main

import (
	"context"

	_ "github.com/benthosdev/benthos/v4/public/components/all"
	"github.com/benthosdev/benthos/v4/public/service"
)

func main() {
	service.RunCLI(context.Background())
}
