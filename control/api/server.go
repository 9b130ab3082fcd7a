package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// Engine is what the server asks of the daemon: changes from requests,
// and read models to answer with. Errors carry their kind (errdefs).
type Engine interface {
	Networks(ctx context.Context) ([]Network, error)
	Network(ctx context.Context, ref string) (Network, error)
	CreateNetwork(ctx context.Context, req NetworkCreate) (Network, error)
	RemoveNetwork(ctx context.Context, ref string) error
	PruneNetworks(ctx context.Context) (removed []string, err error)
	Connect(ctx context.Context, network string, req Connect) error
	Disconnect(ctx context.Context, network string, req Disconnect) error
	Sandboxes(ctx context.Context) ([]Sandbox, error)
	Sandbox(ctx context.Context, ref string) (Sandbox, error)
	CreateSandbox(ctx context.Context, req SandboxCreate) (Sandbox, error)
	UpdateSandbox(ctx context.Context, ref string, req SandboxUpdate) (Sandbox, error)
	RemoveSandbox(ctx context.Context, ref string, force bool) error
	// Publish and Unpublish answer with what they changed, shaped like
	// NetworkSettings.Ports.
	Publish(ctx context.Context, sandbox string, req Ports) (map[string][]PortBinding, error)
	Unpublish(ctx context.Context, sandbox string, filters []PortMapping) (map[string][]PortBinding, error)
	Status(ctx context.Context) (Status, error)
	// Events opens a stream of datapath events; the datapath writes
	// events only while a stream is open.
	Events(ctx context.Context, filter EventFilter) (EventStream, error)
	Counters(ctx context.Context) ([]Counter, error)
	Metrics(ctx context.Context) (Metrics, error)
	Reconcile(ctx context.Context) error
	// Drift says what a reconcile would repair now, and changes nothing.
	Drift(ctx context.Context) (Drift, error)
	// Attachments of runtimes that own their namespaces, in one step each
	// (CNI): attach, check, detach (idempotent), and collect those a
	// runtime no longer names.
	Attach(ctx context.Context, req AttachmentCreate) (Attachment, error)
	CheckAttachment(ctx context.Context, ref AttachmentRef, netns string) error
	Detach(ctx context.Context, ref AttachmentRef) error
	CollectAttachments(ctx context.Context, req AttachmentsCollect) (removed []string, err error)
}

// RuntimeEngine is the engine as a frontend of a container runtime that
// owns its namespaces asks for it, in process (Docker's plugin): pools and
// addresses on their own, and endpoints created, joined, left and deleted
// step by step. Every step may be replayed.
type RuntimeEngine interface {
	Engine
	// Networks, endpoints and ports that a frontend's runtime owns: the
	// CLI's calls of the same names refuse them.
	CreateFrontendNetwork(ctx context.Context, req NetworkCreate) (Network, error)
	RemoveFrontendNetwork(ctx context.Context, frontend, ref string) error
	PublishEndpoint(ctx context.Context, frontend, id string, mappings []PortMapping) (map[string][]PortBinding, error)
	UnpublishEndpoint(ctx context.Context, frontend, id string) error
	// RequestPool reserves a pool of the family v6 says.
	RequestPool(ctx context.Context, subnet, ipRange netip.Prefix, v6 bool) (Pool, error)
	// RequestedPool finds the requested pool of subnet no network uses yet.
	RequestedPool(ctx context.Context, subnet netip.Prefix) (Pool, error)
	ReleasePool(ctx context.Context, id string) error
	RequestAddress(ctx context.Context, poolID string, addr netip.Addr, gateway bool) (netip.Prefix, error)
	ReleaseAddress(ctx context.Context, poolID string, addr netip.Addr) error
	CreateEndpoint(ctx context.Context, req EndpointCreate) (Endpoint, error)
	JoinEndpoint(ctx context.Context, id, netns string) (Endpoint, error)
	LeaveEndpoint(ctx context.Context, id string) error
	DeleteEndpoint(ctx context.Context, id string) error
}

// Server answers API requests with an engine.
type Server struct {
	engine      Engine
	mux         *http.ServeMux
	portChanges *prometheus.HistogramVec
}

// NewServer routes the API to engine.
func NewServer(engine Engine) *Server {
	s := &Server{engine: engine, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /v1/networks", s.listNetworks)
	s.mux.HandleFunc("POST /v1/networks", s.createNetwork)
	s.mux.HandleFunc("POST /v1/networks/prune", s.pruneNetworks)
	s.mux.HandleFunc("GET /v1/networks/{ref}", s.inspectNetwork)
	s.mux.HandleFunc("DELETE /v1/networks/{ref}", s.removeNetwork)
	s.mux.HandleFunc("POST /v1/networks/{ref}/connect", s.connect)
	s.mux.HandleFunc("POST /v1/networks/{ref}/disconnect", s.disconnect)
	s.mux.HandleFunc("GET /v1/sandboxes", s.listSandboxes)
	s.mux.HandleFunc("POST /v1/sandboxes", s.createSandbox)
	s.mux.HandleFunc("GET /v1/sandboxes/{ref}", s.inspectSandbox)
	s.mux.HandleFunc("DELETE /v1/sandboxes/{ref}", s.removeSandbox)
	s.mux.HandleFunc("POST /v1/sandboxes/{ref}/update", s.updateSandbox)
	s.mux.HandleFunc("POST /v1/sandboxes/{ref}/publish", s.publish)
	s.mux.HandleFunc("POST /v1/sandboxes/{ref}/unpublish", s.unpublish)
	s.mux.HandleFunc("POST /v1/attachments", s.attach)
	s.mux.HandleFunc("GET /v1/attachments/{container}/{ifname}", s.checkAttachment)
	s.mux.HandleFunc("DELETE /v1/attachments/{container}/{ifname}", s.detach)
	s.mux.HandleFunc("POST /v1/attachments/collect", s.collectAttachments)
	s.mux.HandleFunc("GET /v1/status", s.status)
	s.mux.HandleFunc("GET /v1/events", s.events)
	s.mux.HandleFunc("POST /v1/reconcile", s.reconcile)
	s.mux.HandleFunc("GET /v1/reconcile", s.drift)
	reg := prometheus.NewRegistry()
	s.portChanges = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ebpfnet_port_change_seconds",
		Help: "Time to publish or unpublish ports through the API, durable commit included.",
		// 100 µs to 1 s: a change is a store commit and a few map updates.
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
	}, []string{"operation"})
	// The Go runtime's and the process's own (goroutines, open files,
	// resident memory): what a leak shows in first.
	reg.MustRegister(counterCollector{engine}, metricsCollector{engine}, s.portChanges,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve listens on the unix socket at path until ctx ends, the socket
// the group gid's (-1: the daemon's own) with the given mode.
func (s *Server) Serve(ctx context.Context, path string, mode os.FileMode, gid int) error {
	l, err := ListenUnix(path, mode, gid)
	if err != nil {
		return err
	}
	// Requests end with ctx, so a shutdown need not wait for event
	// streams, which never end on their own. A connection idle between
	// requests is closed: each holds a goroutine and a file, and a client
	// that keeps its connections open would otherwise grow them for ever.
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	err = srv.Serve(l)
	os.Remove(path)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ListenUnix listens on the unix socket at path, the group gid's (-1: the
// daemon's own) with the given mode, taking the place of a stale socket
// but not of a live one.
func ListenUnix(path string, mode os.FileMode, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s is in use by another daemon", path)
	}
	os.Remove(path) // a stale socket of a daemon that died
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Lchown(path, -1, gid); err != nil {
		l.Close()
		return nil, fmt.Errorf("give %s to group %d: %w", path, gid, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("set mode of %s: %w", path, err)
	}
	return l, nil
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// statusOf answers each kind of failure with its status: what the
// requester can fix 4xx, the daemon's own failures 500.
var statusOf = map[error]int{
	errdefs.ErrInvalid:  http.StatusBadRequest,
	errdefs.ErrNotFound: http.StatusNotFound,
	errdefs.ErrConflict: http.StatusConflict,
	nil:                 http.StatusInternalServerError,
}

func fail(w http.ResponseWriter, err error) {
	reply(w, statusOf[errdefs.Kind(err)], Error{Message: err.Error()})
}

// answer replies with a handler's result, or its error.
func answer[T any](w http.ResponseWriter, code int, v T, err error) {
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, code, v)
}

// done replies to a change that answers nothing.
func done(w http.ResponseWriter, err error) {
	if err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		fail(w, errdefs.Invalidf("decode request: %w", err))
		return false
	}
	return true
}

func (s *Server) attach(w http.ResponseWriter, r *http.Request) {
	var req AttachmentCreate
	if decode(w, r, &req) {
		v, err := s.engine.Attach(r.Context(), req)
		answer(w, http.StatusCreated, v, err)
	}
}

func attachmentRef(r *http.Request) AttachmentRef {
	return AttachmentRef{ContainerID: r.PathValue("container"), IfName: r.PathValue("ifname")}
}

func (s *Server) checkAttachment(w http.ResponseWriter, r *http.Request) {
	done(w, s.engine.CheckAttachment(r.Context(), attachmentRef(r), r.URL.Query().Get("netns")))
}

func (s *Server) detach(w http.ResponseWriter, r *http.Request) {
	done(w, s.engine.Detach(r.Context(), attachmentRef(r)))
}

func (s *Server) collectAttachments(w http.ResponseWriter, r *http.Request) {
	var req AttachmentsCollect
	if decode(w, r, &req) {
		removed, err := s.engine.CollectAttachments(r.Context(), req)
		if removed == nil {
			removed = []string{}
		}
		answer(w, http.StatusOK, removed, err)
	}
}

func (s *Server) listNetworks(w http.ResponseWriter, r *http.Request) {
	v, err := s.engine.Networks(r.Context())
	answer(w, http.StatusOK, v, err)
}

func (s *Server) inspectNetwork(w http.ResponseWriter, r *http.Request) {
	v, err := s.engine.Network(r.Context(), r.PathValue("ref"))
	answer(w, http.StatusOK, v, err)
}

func (s *Server) createNetwork(w http.ResponseWriter, r *http.Request) {
	var req NetworkCreate
	if decode(w, r, &req) {
		v, err := s.engine.CreateNetwork(r.Context(), req)
		answer(w, http.StatusCreated, v, err)
	}
}

func (s *Server) removeNetwork(w http.ResponseWriter, r *http.Request) {
	done(w, s.engine.RemoveNetwork(r.Context(), r.PathValue("ref")))
}

func (s *Server) pruneNetworks(w http.ResponseWriter, r *http.Request) {
	removed, err := s.engine.PruneNetworks(r.Context())
	if removed == nil {
		removed = []string{}
	}
	answer(w, http.StatusOK, Pruned{NetworksDeleted: removed}, err)
}

func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	var req Connect
	if decode(w, r, &req) {
		done(w, s.engine.Connect(r.Context(), r.PathValue("ref"), req))
	}
}

func (s *Server) disconnect(w http.ResponseWriter, r *http.Request) {
	var req Disconnect
	if decode(w, r, &req) {
		done(w, s.engine.Disconnect(r.Context(), r.PathValue("ref"), req))
	}
}

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	v, err := s.engine.Sandboxes(r.Context())
	answer(w, http.StatusOK, v, err)
}

func (s *Server) inspectSandbox(w http.ResponseWriter, r *http.Request) {
	v, err := s.engine.Sandbox(r.Context(), r.PathValue("ref"))
	answer(w, http.StatusOK, v, err)
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var req SandboxCreate
	if decode(w, r, &req) {
		v, err := s.engine.CreateSandbox(r.Context(), req)
		answer(w, http.StatusCreated, v, err)
	}
}

func (s *Server) updateSandbox(w http.ResponseWriter, r *http.Request) {
	var req SandboxUpdate
	if decode(w, r, &req) {
		v, err := s.engine.UpdateSandbox(r.Context(), r.PathValue("ref"), req)
		answer(w, http.StatusOK, v, err)
	}
}

func (s *Server) removeSandbox(w http.ResponseWriter, r *http.Request) {
	done(w, s.engine.RemoveSandbox(r.Context(), r.PathValue("ref"), r.URL.Query().Get("force") == "true"))
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	s.changePorts(w, r, "publish", s.engine.Publish)
}

func (s *Server) unpublish(w http.ResponseWriter, r *http.Request) {
	s.changePorts(w, r, "unpublish", func(ctx context.Context, sandbox string, req Ports) (map[string][]PortBinding, error) {
		if !req.Sources.Empty() {
			return nil, errdefs.Invalid(errors.New("unpublish takes no source lists"))
		}
		return s.engine.Unpublish(ctx, sandbox, req.Mappings)
	})
}

// changePorts answers with the publications the change added or removed,
// shaped like NetworkSettings.Ports.
func (s *Server) changePorts(w http.ResponseWriter, r *http.Request, operation string,
	change func(context.Context, string, Ports) (map[string][]PortBinding, error)) {
	var req Ports
	if !decode(w, r, &req) {
		return
	}
	if len(req.Mappings) == 0 {
		fail(w, errdefs.Invalid(errors.New("no port mapping given")))
		return
	}
	start := time.Now()
	v, err := change(r.Context(), r.PathValue("ref"), req)
	if err == nil {
		s.portChanges.WithLabelValues(operation).Observe(time.Since(start).Seconds())
	}
	answer(w, http.StatusOK, v, err)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	v, err := s.engine.Status(r.Context())
	answer(w, http.StatusOK, v, err)
}

// events streams datapath events as JSON lines until the client goes.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	stream, err := s.engine.Events(r.Context(), EventFilter{Type: q.Get("type"), Sandbox: q.Get("sandbox"), Network: q.Get("network")})
	if err != nil {
		fail(w, err)
		return
	}
	defer stream.Close()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	// The headers tell the client its stream is open: events are on.
	if err := rc.Flush(); err != nil {
		return
	}
	enc := json.NewEncoder(w)
	for {
		ev, err := stream.Next(r.Context())
		if err != nil {
			return
		}
		if enc.Encode(ev) != nil || rc.Flush() != nil {
			return
		}
	}
}

func (s *Server) reconcile(w http.ResponseWriter, r *http.Request) {
	done(w, s.engine.Reconcile(r.Context()))
}

func (s *Server) drift(w http.ResponseWriter, r *http.Request) {
	v, err := s.engine.Drift(r.Context())
	answer(w, http.StatusOK, v, err)
}

// counterCollector exports the datapath's verdict counters.
type counterCollector struct{ engine Engine }

var (
	packetsDesc = prometheus.NewDesc("ebpfnet_packets_total", "Packets seen by the datapath, by program and verdict.", []string{"program", "verdict"}, nil)
	bytesDesc   = prometheus.NewDesc("ebpfnet_bytes_total", "Bytes seen by the datapath, by program and verdict.", []string{"program", "verdict"}, nil)
)

func (c counterCollector) Describe(ch chan<- *prometheus.Desc) { ch <- packetsDesc; ch <- bytesDesc }

func (c counterCollector) Collect(ch chan<- prometheus.Metric) {
	counters, err := c.engine.Counters(context.Background())
	if err != nil {
		ch <- prometheus.NewInvalidMetric(packetsDesc, err)
		return
	}
	for _, k := range counters {
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(k.Packets), k.Program, k.Verdict)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(k.Bytes), k.Program, k.Verdict)
	}
}

// metricsCollector exports conntrack, NAT ports, the balanced
// publications' backends and the embedded DNS.
type metricsCollector struct{ engine Engine }

var (
	conntrackDesc = prometheus.NewDesc("ebpfnet_conntrack_entries", "Live conntrack entries (one per direction of a flow), by state, protocol and table (ct: proven real; ct_new: not yet).", []string{"state", "proto", "table"}, nil)
	natPortsDesc  = prometheus.NewDesc("ebpfnet_nat_ports_in_use", "NAT ports held by masqueraded flows, by uplink and address.", []string{"uplink", "address"}, nil)
	reclaimedDesc = prometheus.NewDesc("ebpfnet_conntrack_reclaimed_total", "Expired conntrack entries the daemon removed.", nil, nil)
	dnsDesc       = prometheus.NewDesc("ebpfnet_dns_queries_total", "Queries the embedded DNS answered, by outcome.", []string{"outcome"}, nil)
	dnsMissDesc   = prometheus.NewDesc("ebpfnet_dns_cache_misses_total", "Forwardable queries the cache could not answer.", nil, nil)
	dnsCacheDesc  = prometheus.NewDesc("ebpfnet_dns_cache_entries", "Forwarded answers the cache holds.", nil, nil)
	backendDesc   = prometheus.NewDesc("ebpfnet_backend_flows_total", "New flows each backend (address:port in its sandbox) of balanced publications took, by protocol.", []string{"backend", "proto"}, nil)
)

func (c metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{conntrackDesc, natPortsDesc, reclaimedDesc, dnsDesc, dnsMissDesc, dnsCacheDesc, backendDesc} {
		ch <- d
	}
}

func (c metricsCollector) Collect(ch chan<- prometheus.Metric) {
	m, err := c.engine.Metrics(context.Background())
	if err != nil {
		ch <- prometheus.NewInvalidMetric(conntrackDesc, err)
		return
	}
	for _, e := range m.Conntrack {
		table := "ct_new"
		if e.Assured {
			table = "ct"
		}
		ch <- prometheus.MustNewConstMetric(conntrackDesc, prometheus.GaugeValue, float64(e.Entries), e.State, e.Proto, table)
	}
	for _, n := range m.NATPorts {
		ch <- prometheus.MustNewConstMetric(natPortsDesc, prometheus.GaugeValue, float64(n.Ports), n.Uplink, n.Addr)
	}
	for _, f := range m.BackendFlows {
		ch <- prometheus.MustNewConstMetric(backendDesc, prometheus.CounterValue, float64(f.Flows), f.Backend, f.Proto)
	}
	ch <- prometheus.MustNewConstMetric(reclaimedDesc, prometheus.CounterValue, float64(m.Reclaimed))
	d := m.DNS
	for outcome, n := range map[string]uint64{"local": d.Local, "cache_hit": d.CacheHit, "forwarded": d.Forwarded,
		"servfail": d.ServFail, "dropped": d.Dropped, "refused": d.Refused, "malformed": d.Malformed} {
		ch <- prometheus.MustNewConstMetric(dnsDesc, prometheus.CounterValue, float64(n), outcome)
	}
	ch <- prometheus.MustNewConstMetric(dnsMissDesc, prometheus.CounterValue, float64(d.CacheMisses))
	ch <- prometheus.MustNewConstMetric(dnsCacheDesc, prometheus.GaugeValue, float64(d.CacheEntries))
}
