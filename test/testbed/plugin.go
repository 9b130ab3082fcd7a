package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// PluginCall makes one call of Docker's plugin protocol (path:
// /NetworkDriver.CreateEndpoint…) on the daemon's plugin socket, as dockerd
// does, and decodes the answer into resp; an answer's Err is the error.
func (h *Host) PluginCall(path string, req, resp any) error {
	client := http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", h.DockerPlugin())
		},
	}}
	defer client.CloseIdleConnections()
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	res, err := client.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	var answer struct{ Err string }
	if err := json.Unmarshal(data, &answer); err != nil {
		return fmt.Errorf("%s: answer %q: %w", path, data, err)
	}
	if answer.Err != "" {
		return errors.New(answer.Err)
	}
	if resp != nil {
		return json.Unmarshal(data, resp)
	}
	return nil
}
