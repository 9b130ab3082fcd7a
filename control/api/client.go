package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// DefaultSocket is where the daemon listens unless told otherwise.
const DefaultSocket = "/run/ebpfnet/ebpfnet.sock"

// Client talks to one daemon.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the daemon at socket.
func NewClient(socket string) *Client {
	return &Client{socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

// Close closes the client's idle connections to the daemon, which would
// otherwise stay open, each holding a file of the daemon's, until the
// daemon ends them.
func (c *Client) Close() { c.http.CloseIdleConnections() }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer closeBody(resp)
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// send makes a request and returns the daemon's answer when it is no
// error.
func (c *Client) send(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://ebpfnet"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("cannot reach the ebpfnet daemon at %s: is it running? (start it with `ebpfnet daemon`)", c.socket)
		}
		if errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("permission denied on %s: run as root", c.socket)
		}
		return nil, err
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer closeBody(resp)
	err = fmt.Errorf("daemon answered %s", resp.Status)
	var e Error
	if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Message != "" {
		err = errors.New(e.Message)
	}
	for kind, code := range statusOf {
		if kind != nil && code == resp.StatusCode {
			return nil, errdefs.Mark(err, kind)
		}
	}
	return nil, err
}

// closeBody reads an answer to its end and closes it. The JSON decoder
// stops at the value's end, before a long (chunked) answer's last chunk,
// and a body closed before its end closes the connection instead of
// keeping it for the next request.
func closeBody(resp *http.Response) {
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func esc(s string) string { return url.PathEscape(s) }

// Networks lists the networks.
func (c *Client) Networks(ctx context.Context) (out []Network, err error) {
	return out, c.do(ctx, "GET", "/v1/networks", nil, &out)
}

// Network inspects one network.
func (c *Client) Network(ctx context.Context, ref string) (out Network, err error) {
	return out, c.do(ctx, "GET", "/v1/networks/"+esc(ref), nil, &out)
}

// CreateNetwork creates a network.
func (c *Client) CreateNetwork(ctx context.Context, req NetworkCreate) (out Network, err error) {
	return out, c.do(ctx, "POST", "/v1/networks", req, &out)
}

// RemoveNetwork removes a network.
func (c *Client) RemoveNetwork(ctx context.Context, ref string) error {
	return c.do(ctx, "DELETE", "/v1/networks/"+esc(ref), nil, nil)
}

// PruneNetworks removes unused user-defined networks.
func (c *Client) PruneNetworks(ctx context.Context) (out Pruned, err error) {
	return out, c.do(ctx, "POST", "/v1/networks/prune", nil, &out)
}

// Connect attaches a sandbox to a network.
func (c *Client) Connect(ctx context.Context, network string, req Connect) error {
	return c.do(ctx, "POST", "/v1/networks/"+esc(network)+"/connect", req, nil)
}

// Disconnect detaches a sandbox from a network.
func (c *Client) Disconnect(ctx context.Context, network string, req Disconnect) error {
	return c.do(ctx, "POST", "/v1/networks/"+esc(network)+"/disconnect", req, nil)
}

// Sandboxes lists the sandboxes.
func (c *Client) Sandboxes(ctx context.Context) (out []Sandbox, err error) {
	return out, c.do(ctx, "GET", "/v1/sandboxes", nil, &out)
}

// Sandbox inspects one sandbox.
func (c *Client) Sandbox(ctx context.Context, ref string) (out Sandbox, err error) {
	return out, c.do(ctx, "GET", "/v1/sandboxes/"+esc(ref), nil, &out)
}

// CreateSandbox creates a sandbox.
func (c *Client) CreateSandbox(ctx context.Context, req SandboxCreate) (out Sandbox, err error) {
	return out, c.do(ctx, "POST", "/v1/sandboxes", req, &out)
}

// UpdateSandbox changes a running sandbox's settings.
func (c *Client) UpdateSandbox(ctx context.Context, ref string, req SandboxUpdate) (out Sandbox, err error) {
	return out, c.do(ctx, "POST", "/v1/sandboxes/"+esc(ref)+"/update", req, &out)
}

// RemoveSandbox removes a sandbox; force kills what still runs in it.
func (c *Client) RemoveSandbox(ctx context.Context, ref string, force bool) error {
	return c.do(ctx, "DELETE", fmt.Sprintf("/v1/sandboxes/%s?force=%t", esc(ref), force), nil, nil)
}

// Status reads the datapath's counters and attachments.
func (c *Client) Status(ctx context.Context) (out Status, err error) {
	return out, c.do(ctx, "GET", "/v1/status", nil, &out)
}

// Events streams datapath events to fn: first opened (fn(nil) says the
// datapath now writes them), then one call per event, until ctx ends
// (nil), fn fails (its error), or the daemon goes (io.ErrUnexpectedEOF).
func (c *Client) Events(ctx context.Context, f EventFilter, fn func(*Event) error) error {
	q := url.Values{}
	for k, v := range map[string]string{"type": f.Type, "sandbox": f.Sandbox, "network": f.Network} {
		if v != "" {
			q.Set(k, v)
		}
	}
	resp, err := c.send(ctx, "GET", "/v1/events?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := fn(nil); err != nil {
		return err
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev Event
		err := dec.Decode(&ev)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("the daemon ended the event stream: %w", io.ErrUnexpectedEOF)
		}
		if err != nil {
			return fmt.Errorf("read events: %w", err)
		}
		if err := fn(&ev); err != nil {
			return err
		}
	}
}

// Drift asks the daemon what a reconcile would repair now.
func (c *Client) Drift(ctx context.Context) (out Drift, err error) {
	return out, c.do(ctx, "GET", "/v1/reconcile", nil, &out)
}

// Reconcile asks the daemon to reconcile now.
func (c *Client) Reconcile(ctx context.Context) error {
	return c.do(ctx, "POST", "/v1/reconcile", nil, nil)
}

// Publish publishes ports of a sandbox and returns what it published.
func (c *Client) Publish(ctx context.Context, sandbox string, req Ports) (out map[string][]PortBinding, err error) {
	return out, c.do(ctx, "POST", "/v1/sandboxes/"+esc(sandbox)+"/publish", req, &out)
}

// Unpublish removes the published ports of a sandbox that match filters
// and returns what it removed.
func (c *Client) Unpublish(ctx context.Context, sandbox string, filters []PortMapping) (out map[string][]PortBinding, err error) {
	return out, c.do(ctx, "POST", "/v1/sandboxes/"+esc(sandbox)+"/unpublish", Ports{Mappings: filters}, &out)
}

// Attach attaches a runtime's namespace to a network (CNI's ADD).
func (c *Client) Attach(ctx context.Context, req AttachmentCreate) (out Attachment, err error) {
	return out, c.do(ctx, "POST", "/v1/attachments", req, &out)
}

// CheckAttachment fails, saying why, when an attachment is not as it was made.
func (c *Client) CheckAttachment(ctx context.Context, ref AttachmentRef, netns string) error {
	return c.do(ctx, "GET", "/v1/attachments/"+esc(ref.ContainerID)+"/"+esc(ref.IfName)+"?netns="+url.QueryEscape(netns), nil, nil)
}

// Detach removes an attachment; one that is gone is fine.
func (c *Client) Detach(ctx context.Context, ref AttachmentRef) error {
	return c.do(ctx, "DELETE", "/v1/attachments/"+esc(ref.ContainerID)+"/"+esc(ref.IfName), nil, nil)
}

// CollectAttachments removes a frontend's attachments but those kept.
func (c *Client) CollectAttachments(ctx context.Context, req AttachmentsCollect) (removed []string, err error) {
	return removed, c.do(ctx, "POST", "/v1/attachments/collect", req, &removed)
}
