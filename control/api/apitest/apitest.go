// Package apitest serves tests of the API's users: Nop, an engine that
// answers every call with nothing and no error, for tests that look at
// what a caller sends or how it copes with any request (fuzzing the
// server and Docker's plugin).
package apitest

import (
	"context"
	"net/netip"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// Nop is an api.RuntimeEngine that changes nothing and answers zero
// values.
type Nop struct{}

var _ api.RuntimeEngine = Nop{}

func (Nop) Networks(context.Context) ([]api.Network, error)      { return nil, nil }
func (Nop) Network(context.Context, string) (api.Network, error) { return api.Network{}, nil }
func (Nop) CreateNetwork(context.Context, api.NetworkCreate) (api.Network, error) {
	return api.Network{}, nil
}
func (Nop) RemoveNetwork(context.Context, string) error              { return nil }
func (Nop) PruneNetworks(context.Context) ([]string, error)          { return nil, nil }
func (Nop) Connect(context.Context, string, api.Connect) error       { return nil }
func (Nop) Disconnect(context.Context, string, api.Disconnect) error { return nil }
func (Nop) Sandboxes(context.Context) ([]api.Sandbox, error)         { return nil, nil }
func (Nop) Sandbox(context.Context, string) (api.Sandbox, error)     { return api.Sandbox{}, nil }
func (Nop) CreateSandbox(context.Context, api.SandboxCreate) (api.Sandbox, error) {
	return api.Sandbox{}, nil
}
func (Nop) RemoveSandbox(context.Context, string, bool) error { return nil }
func (Nop) UpdateSandbox(context.Context, string, api.SandboxUpdate) (api.Sandbox, error) {
	return api.Sandbox{}, nil
}
func (Nop) Publish(context.Context, string, api.Ports) (map[string][]api.PortBinding, error) {
	return nil, nil
}
func (Nop) Unpublish(context.Context, string, []api.PortMapping) (map[string][]api.PortBinding, error) {
	return nil, nil
}
func (Nop) Status(context.Context) (api.Status, error) { return api.Status{}, nil }
func (Nop) Events(context.Context, api.EventFilter) (api.EventStream, error) {
	return nil, errdefs.Invalidf("no events here")
}
func (Nop) Counters(context.Context) ([]api.Counter, error) { return nil, nil }
func (Nop) Metrics(context.Context) (api.Metrics, error)    { return api.Metrics{}, nil }
func (Nop) Reconcile(context.Context) error                 { return nil }
func (Nop) Drift(context.Context) (api.Drift, error)        { return api.Drift{}, nil }
func (Nop) Attach(context.Context, api.AttachmentCreate) (api.Attachment, error) {
	return api.Attachment{}, nil
}
func (Nop) CheckAttachment(context.Context, api.AttachmentRef, string) error { return nil }
func (Nop) Detach(context.Context, api.AttachmentRef) error                  { return nil }
func (Nop) CollectAttachments(context.Context, api.AttachmentsCollect) ([]string, error) {
	return nil, nil
}
func (Nop) CreateFrontendNetwork(context.Context, api.NetworkCreate) (api.Network, error) {
	return api.Network{}, nil
}
func (Nop) RemoveFrontendNetwork(context.Context, string, string) error { return nil }
func (Nop) PublishEndpoint(context.Context, string, string, []api.PortMapping) (map[string][]api.PortBinding, error) {
	return nil, nil
}
func (Nop) UnpublishEndpoint(context.Context, string, string) error { return nil }
func (Nop) RequestPool(context.Context, netip.Prefix, netip.Prefix, bool) (api.Pool, error) {
	return api.Pool{}, nil
}
func (Nop) RequestedPool(context.Context, netip.Prefix) (api.Pool, error) { return api.Pool{}, nil }
func (Nop) ReleasePool(context.Context, string) error                     { return nil }
func (Nop) RequestAddress(context.Context, string, netip.Addr, bool) (netip.Prefix, error) {
	return netip.Prefix{}, nil
}
func (Nop) ReleaseAddress(context.Context, string, netip.Addr) error { return nil }
func (Nop) CreateEndpoint(context.Context, api.EndpointCreate) (api.Endpoint, error) {
	return api.Endpoint{}, nil
}
func (Nop) JoinEndpoint(context.Context, string, string) (api.Endpoint, error) {
	return api.Endpoint{}, nil
}
func (Nop) LeaveEndpoint(context.Context, string) error  { return nil }
func (Nop) DeleteEndpoint(context.Context, string) error { return nil }
