package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ebpfnet/ebpfnet/control"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Server answers API requests with an engine.
type Server struct {
	engine *control.Engine
	mux    *http.ServeMux
}

// NewServer routes the API to engine.
func NewServer(engine *control.Engine) *Server {
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
	s.mux.HandleFunc("POST /v1/sandboxes/{ref}/publish", s.publish)
	s.mux.HandleFunc("POST /v1/sandboxes/{ref}/unpublish", s.unpublish)
	s.mux.HandleFunc("GET /v1/status", s.status)
	s.mux.HandleFunc("POST /v1/reconcile", s.reconcile)
	reg := prometheus.NewRegistry()
	reg.MustRegister(counterCollector{engine})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve listens on the unix socket at path with the given mode until ctx ends.
func (s *Server) Serve(ctx context.Context, path string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("socket %s is in use by another daemon", path)
	}
	os.Remove(path) // a stale socket of a daemon that died
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return fmt.Errorf("set mode of %s: %w", path, err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
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

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		fail(w, errdefs.Invalidf("decode request: %w", err))
		return false
	}
	return true
}

func (s *Server) listNetworks(w http.ResponseWriter, r *http.Request) {
	nets, sbs, err := s.engine.Snapshot()
	if err != nil {
		fail(w, err)
		return
	}
	out := []Network{}
	for _, n := range nets {
		out = append(out, networkView(n, sbs))
	}
	reply(w, http.StatusOK, out)
}

func (s *Server) inspectNetwork(w http.ResponseWriter, r *http.Request) {
	var n store.Network
	var sbs []store.Sandbox
	err := s.engine.View(func(tx *store.Tx) error {
		var err error
		if n, err = tx.Network(r.PathValue("ref")); err != nil {
			return err
		}
		sbs, err = tx.Sandboxes()
		return err
	})
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, http.StatusOK, networkView(n, sbs))
}

func (s *Server) createNetwork(w http.ResponseWriter, r *http.Request) {
	var req NetworkCreate
	if !decode(w, r, &req) {
		return
	}
	spec, err := networkSpec(req)
	if err != nil {
		fail(w, err)
		return
	}
	n, err := s.engine.CreateNetwork(spec)
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, http.StatusCreated, networkView(n, nil))
}

func (s *Server) removeNetwork(w http.ResponseWriter, r *http.Request) {
	if err := s.engine.RemoveNetwork(r.PathValue("ref")); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) pruneNetworks(w http.ResponseWriter, r *http.Request) {
	removed, err := s.engine.PruneNetworks()
	if err != nil {
		fail(w, err)
		return
	}
	if removed == nil {
		removed = []string{}
	}
	reply(w, http.StatusOK, Pruned{NetworksDeleted: removed})
}

func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	var req Connect
	if !decode(w, r, &req) {
		return
	}
	ip, err := parseIP(req.IP)
	if err == nil {
		err = s.engine.Connect(r.PathValue("ref"), req.Sandbox, control.EndpointSpec{IP: ip, Aliases: req.Aliases})
	}
	if err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) disconnect(w http.ResponseWriter, r *http.Request) {
	var req Disconnect
	if !decode(w, r, &req) {
		return
	}
	if err := s.engine.Disconnect(r.PathValue("ref"), req.Sandbox); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) sandboxView(sb store.Sandbox, pubs []store.Publication, nets map[string]store.Network) Sandbox {
	etc := ""
	if sb.Mode != store.ModeHost {
		etc = s.engine.SandboxEtc(sb.Name)
	}
	return sandboxView(sb, pubs, nets, s.engine.SandboxNamespace(sb.Name), etc)
}

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	var (
		nets []store.Network
		sbs  []store.Sandbox
		pubs map[string][]store.Publication
	)
	err := s.engine.View(func(tx *store.Tx) (err error) {
		if nets, err = tx.Networks(); err != nil {
			return err
		}
		if sbs, err = tx.Sandboxes(); err != nil {
			return err
		}
		pubs, err = tx.AllPublications()
		return err
	})
	if err != nil {
		fail(w, err)
		return
	}
	out := []Sandbox{}
	byID := store.ByID(nets)
	for _, sb := range sbs {
		out = append(out, s.sandboxView(sb, pubs[sb.Name], byID))
	}
	reply(w, http.StatusOK, out)
}

func (s *Server) inspectSandbox(w http.ResponseWriter, r *http.Request) {
	var v Sandbox
	err := s.engine.View(func(tx *store.Tx) error {
		sb, err := tx.Sandbox(r.PathValue("ref"))
		if err != nil {
			return err
		}
		v, err = s.viewIn(tx, sb)
		return err
	})
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, http.StatusOK, v)
}

// viewIn is a sandbox's view, reading in tx what it shows besides the
// record: its publications and the networks.
func (s *Server) viewIn(tx *store.Tx, sb store.Sandbox) (Sandbox, error) {
	nets, err := tx.Networks()
	if err != nil {
		return Sandbox{}, err
	}
	pubs, err := tx.Publications(sb.Name)
	if err != nil {
		return Sandbox{}, err
	}
	return s.sandboxView(sb, pubs, store.ByID(nets)), nil
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var req SandboxCreate
	if !decode(w, r, &req) {
		return
	}
	ip, err := parseIP(req.IP)
	if err != nil {
		fail(w, err)
		return
	}
	servers, err := dnsServers(req.DNS)
	if err != nil {
		fail(w, err)
		return
	}
	sb, err := s.engine.CreateSandbox(control.SandboxSpec{Name: req.Name, Networks: req.Networks, IP: ip, Aliases: req.Aliases,
		Publish: req.Publish, DNS: servers, Links: links(req.Links)})
	if err != nil {
		fail(w, err)
		return
	}
	var v Sandbox
	if err := s.engine.View(func(tx *store.Tx) (err error) { v, err = s.viewIn(tx, sb); return err }); err != nil {
		fail(w, err)
		return
	}
	reply(w, http.StatusCreated, v)
}

func (s *Server) removeSandbox(w http.ResponseWriter, r *http.Request) {
	if err := s.engine.RemoveSandbox(r.PathValue("ref"), r.URL.Query().Get("force") == "true"); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	s.changePorts(w, r, s.engine.Publish)
}

func (s *Server) unpublish(w http.ResponseWriter, r *http.Request) {
	s.changePorts(w, r, s.engine.Unpublish)
}

// changePorts answers with the publications the change added or removed,
// shaped like NetworkSettings.Ports.
func (s *Server) changePorts(w http.ResponseWriter, r *http.Request,
	change func(string, []PortMapping) ([]store.Publication, error)) {
	var req Ports
	if !decode(w, r, &req) {
		return
	}
	if len(req.Mappings) == 0 {
		fail(w, errdefs.Invalid(errors.New("no port mapping given")))
		return
	}
	changed, err := change(r.PathValue("ref"), req.Mappings)
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, http.StatusOK, portBindings(changed))
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.engine.Status()
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, http.StatusOK, st)
}

func (s *Server) reconcile(w http.ResponseWriter, r *http.Request) {
	if err := s.engine.Reconcile(); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// counterCollector exports the datapath's verdict counters.
type counterCollector struct{ engine *control.Engine }

var (
	packetsDesc = prometheus.NewDesc("ebpfnet_packets_total", "Packets seen by the datapath, by program and verdict.", []string{"program", "verdict"}, nil)
	bytesDesc   = prometheus.NewDesc("ebpfnet_bytes_total", "Bytes seen by the datapath, by program and verdict.", []string{"program", "verdict"}, nil)
)

func (c counterCollector) Describe(ch chan<- *prometheus.Desc) { ch <- packetsDesc; ch <- bytesDesc }

func (c counterCollector) Collect(ch chan<- prometheus.Metric) {
	counters, err := c.engine.Counters()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(packetsDesc, err)
		return
	}
	for _, k := range counters {
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(k.Packets), k.Program, k.Verdict)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(k.Bytes), k.Program, k.Verdict)
	}
}
