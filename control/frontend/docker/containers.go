package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"
)

// DefaultHost is where Docker's API listens unless DOCKER_HOST says
// otherwise.
const DefaultHost = "unix:///var/run/docker.sock"

// Host is the Docker API address the docker client would use: DOCKER_HOST,
// or the default socket.
func Host() string {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return DefaultHost
}

// EndpointIDs asks Docker at host for the endpoint IDs of a container,
// by name or ID, on every network it is connected to. Docker never shows
// a plugin network's published ports itself (docker port and docker ps
// leave them out): these IDs are how ebpfnet finds them.
func EndpointIDs(ctx context.Context, host, container string) ([]string, error) {
	path, ok := strings.CutPrefix(host, "unix://")
	if !ok {
		return nil, fmt.Errorf("Docker host %s: only unix:// sockets are supported", host)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/containers/"+url.PathEscape(container)+"/json", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask Docker at %s: %w", host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("no such container: %s", container)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ask Docker at %s about %s: %s", host, container, resp.Status)
	}
	var inspect struct {
		NetworkSettings struct {
			Networks map[string]struct{ EndpointID string }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&inspect); err != nil {
		return nil, fmt.Errorf("decode Docker's answer about %s: %w", container, err)
	}
	var ids []string
	for _, n := range inspect.NetworkSettings.Networks {
		if n.EndpointID != "" {
			ids = append(ids, n.EndpointID)
		}
	}
	sort.Strings(ids)
	return ids, nil
}
