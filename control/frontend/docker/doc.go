// Package docker is the frontend of Docker: ebpfnet as Docker's network
// and IPAM plugin ("ebpfnet", on /run/docker/plugins/ebpfnet.sock), so
// that `docker network create -d ebpfnet` networks publish, masquerade and
// isolate through the datapath instead of iptables and docker-proxy.
//
// It speaks the remote driver and IPAM protocols with go-plugins-helpers'
// types and calls api.RuntimeEngine in process: Docker's network and
// endpoint IDs become the engine's, its sandbox key the namespace an
// endpoint joins, its port map structured mappings. Docker owns the
// container's namespace, names and DNS; the engine owns the host side.
package docker
