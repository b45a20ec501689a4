// Command simulator is the bench's compiled Webflow fake: the contract checks of
// tests/fakes/webflow.py for PATCH /v2/assets/{asset_id}, at a fraction of the aiohttp
// fake's CPU, so a drain measures the consumer rather than the simulator.
//
// It prints one JSON line with the "connections" config section (like python -m tests.fakes),
// serves GET /_stats in the same shape (by_status, ok, first_ok, last_ok on CLOCK_MONOTONIC,
// as Python's time.monotonic) plus "violations", "inversions" and "repeats": an accepted
// update whose displayName is "update N" with N below the highest N already accepted for
// that asset is an order inversion; N equal to it is a repeat (a redelivery).
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"mime"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

const unlimited = "1000000"

// isObjectID: 24 lowercase hex digits (the fake's ^[0-9a-f]{24}$), without a regexp.
func isObjectID(s string) bool {
	if len(s) != 24 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// monotonic is CLOCK_MONOTONIC in seconds, the clock of Python's time.monotonic().
func monotonic() float64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0)
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

type stats struct {
	mu         sync.Mutex
	byStatus   map[int]int
	ok         int
	firstOK    float64
	lastOK     float64
	violations []string
	inversions int
	repeats    int
	highest    map[string]int64 // per asset: the highest "update N" accepted
}

func (s *stats) count(status int, asset string, update int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byStatus[status]++
	if status >= 300 {
		return
	}
	s.lastOK = monotonic()
	if s.firstOK == 0 {
		s.firstOK = s.lastOK
	}
	s.ok++
	if update < 0 {
		return
	}
	if top, seen := s.highest[asset]; seen {
		switch {
		case update < top:
			s.inversions++
			return
		case update == top:
			s.repeats++
			return
		}
	}
	s.highest[asset] = update
}

func (s *stats) violation(message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.violations) < 100 { // enough to read; the count is in by_status
		s.violations = append(s.violations, message)
	}
}

type webflow struct {
	token   string
	latency time.Duration
	stats   *stats
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	data, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(data)
}

// update checks a request as WebflowFake.update does, in the same order; returns the
// status answered, the asset id and the N of "update N" (-1 if none).
func (f *webflow) update(w http.ResponseWriter, r *http.Request, asset string) (int, int64) {
	refuse := func(status int, message string) (int, int64) {
		f.stats.violation(message)
		writeJSON(w, status, map[string]string{"error": message})
		return status, -1
	}
	raw, err := readAll(r)
	if err != nil {
		return refuse(400, "body could not be read")
	}
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		writeJSON(w, 401, map[string]string{"code": "not_authorized"})
		return 401, -1
	}
	if !isObjectID(asset) {
		return refuse(404, "asset_id is not a 24-hex object id")
	}
	contentType := "application/octet-stream" // aiohttp's content_type without a header
	if header := r.Header.Get("Content-Type"); header != "" {
		contentType, _, _ = mime.ParseMediaType(header)
	}
	if contentType != "application/json" {
		return refuse(415, fmt.Sprintf("Content-Type %q is not JSON", contentType))
	}
	var body map[string]any
	if len(raw) == 0 || json.Unmarshal(raw, &body) != nil || body == nil {
		return refuse(400, "body is not a JSON object")
	}
	if _, there := body["localeId"]; there {
		return refuse(400, "localeId belongs in the query, not the body")
	}
	var extra []string
	for name := range body {
		if name != "displayName" && name != "altText" {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return refuse(400, fmt.Sprintf("fields not accepted: %v", extra))
	}
	query := r.URL.Query()
	for name := range query {
		if name != "localeId" {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return refuse(400, fmt.Sprintf("query parameters not accepted: %v", extra))
	}
	if locales := query["localeId"]; len(locales) > 1 {
		return refuse(400, "localeId given more than once")
	} else if len(locales) == 1 && !isObjectID(locales[0]) {
		return refuse(400, "localeId is not a 24-hex object id")
	}
	if f.latency > 0 {
		time.Sleep(f.latency)
	}
	answer := map[string]any{"id": asset}
	for name, value := range body {
		answer[name] = value
	}
	w.Header().Set("X-RateLimit-Limit", unlimited)
	w.Header().Set("X-RateLimit-Remaining", unlimited)
	writeJSON(w, 200, answer)
	update := int64(-1)
	if name, ok := body["displayName"].(string); ok && strings.HasPrefix(name, "update ") {
		if n, err := strconv.ParseInt(name[len("update "):], 10, 64); err == nil {
			update = n
		}
	}
	return 200, update
}

func readAll(r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(r.Body)
	return buf.Bytes(), err
}

func (f *webflow) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_stats" && r.Method == http.MethodGet {
		f.serveStats(w)
		return
	}
	asset, found := strings.CutPrefix(r.URL.Path, "/v2/assets/")
	if !found || asset == "" || strings.Contains(asset, "/") {
		writeJSON(w, 404, map[string]string{"error": "not found"})
		f.stats.count(404, "", -1)
		return
	}
	if r.Method != http.MethodPatch { // aiohttp: 405 for a route that only takes PATCH
		w.Header().Set("Allow", "PATCH")
		writeJSON(w, 405, map[string]string{"error": "method not allowed"})
		f.stats.count(405, "", -1)
		return
	}
	status, update := f.update(w, r, asset)
	f.stats.count(status, asset, update)
}

func (f *webflow) serveStats(w http.ResponseWriter) {
	s := f.stats
	s.mu.Lock()
	byStatus := map[string]int{}
	for status, n := range s.byStatus {
		byStatus[strconv.Itoa(status)] = n
	}
	body := map[string]any{
		"by_status":  byStatus,
		"ok":         s.ok,
		"first_ok":   s.firstOK,
		"last_ok":    s.lastOK,
		"violations": append([]string{}, s.violations...),
		"inversions": s.inversions,
		"repeats":    s.repeats,
	}
	s.mu.Unlock()
	writeJSON(w, 200, body)
}

func main() {
	latencyMs := flag.Float64("latency-ms", 0, "every answer's latency")
	host := flag.String("host", "127.0.0.1", "address to listen on (loopback)")
	flag.Parse()
	debug.SetGCPercent(400) // a few MB of heap: collect less often, spend less CPU per request
	secret := make([]byte, 8)
	rand.Read(secret)
	f := &webflow{
		token:   "SECRET-webflow_token-" + hex.EncodeToString(secret),
		latency: time.Duration(*latencyMs * float64(time.Millisecond)),
		stats:   &stats{byStatus: map[int]int{}, highest: map[string]int64{}},
	}
	listener, err := net.Listen("tcp", net.JoinHostPort(*host, "0"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "simulator: cannot listen:", err)
		os.Exit(1)
	}
	base := "http://" + listener.Addr().String()
	connections := map[string]any{
		"webflow": map[string]any{"default": map[string]string{"base_url": base, "token": f.token}},
	}
	line, _ := json.Marshal(map[string]any{"connections": connections})
	fmt.Println(string(line))
	server := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-stop
		server.Close()
	}()
	if err := server.Serve(listener); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "simulator:", err)
		os.Exit(1)
	}
}
