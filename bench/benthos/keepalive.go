//go:build keepalive

package main

import "net/http"

// Benthos's http_client uses http.DefaultTransport, which keeps 2 idle connections per host:
// with 256 requests in flight it opens and closes connections all the time. Raise the pool to
// the requests in flight (there is no config field for it in v4.27).
func init() {
	transport := http.DefaultTransport.(*http.Transport)
	transport.MaxIdleConns = 512
	transport.MaxIdleConnsPerHost = 512
}
