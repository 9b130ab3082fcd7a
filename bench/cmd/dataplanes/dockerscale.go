package main

import (
	"context"
	"fmt"
	"log"
	"os/exec"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// Docker at scale, the second half of the control plane at scale (issue
// 24): `docker run -d -p` of a container on an ebpfnet network and
// `docker rm -f` of it, with N containers present on that network, each
// with a published port, on a host, daemon and dockerd of their own. The
// goal is the sandboxes' own: p50 at every N within scaleGoal of N=1.
const (
	dockerScaleNet    = "scale"
	dockerScaleSubnet = "10.210.0.0/16"
	// A docker command that takes longer than this is stuck, not slow.
	dockerScaleTimeout = 2 * time.Minute
)

// DockerScaleSample is docker run and rm with N containers present.
type DockerScaleSample struct {
	N        int       `json:"n"`
	RunMs    []float64 `json:"runMs"`
	RemoveMs []float64 `json:"removeMs"`
	RSSKiB   int       `json:"daemonRssKiB"`
	// DockerdRSSKiB is dockerd's alone, not containerd's or the shims'.
	DockerdRSSKiB int `json:"dockerdRssKiB"`
}

// measureDockerScale grows the containers on one ebpfnet network to each
// of sizes and times times runs and removes at each. A container Docker
// fails to run (a limit of the machine's) ends the growth; the note says
// which, or that Docker is not installed.
func measureDockerScale(r *runner, sizes []int, times int) (out []DockerScaleSample, note string) {
	if !testbed.DockerInstalled() {
		return nil, "docker run at scale is not measured: dockerd, containerd or Debian's docker client is missing (make bench-deps installs them)."
	}
	h := testbed.NewHost(r)
	// Docker's defaults but for docker-proxy, which the containers on an
	// ebpfnet network never use: their ports are published by the plugin.
	d := testbed.StartDocker(r, h.NetNS, "--userland-proxy=false")
	// Run before dockerd stops: stopping with hundreds of containers
	// running, it outlasts its stop timeout and leaves their shims behind.
	r.Cleanup(func() { removeContainers(d) })
	d.ImportImage(testbed.BusyboxRootfs(r), "busybox")
	d.MustCLI("network", "create", "-d", h.Prefix, "--ipam-driver", h.Prefix, "--subnet", dockerScaleSubnet, dockerScaleNet)
	run := func(name string, port int) error {
		_, err := dockerCLI(d, dockerScaleTimeout, "run", "-d", "--name", name, "--network", dockerScaleNet,
			"-p", fmt.Sprintf("%d:80", port), "busybox", "sleep", "1d")
		return err
	}
	present := 0
	for _, n := range sizes {
		for ; present < n-1; present++ { // the timed container is the N-th
			if err := run(fmt.Sprintf("c%d", present), 20000+present); err != nil {
				return out, fmt.Sprintf("docker run: N=%d not reached: running container %d failed: %v", n, present+1, err)
			}
		}
		s := DockerScaleSample{N: n}
		for range times {
			t0 := time.Now()
			if err := run("timed", scalePort); err != nil {
				return out, fmt.Sprintf("docker run: N=%d: running the timed container failed: %v", n, err)
			}
			s.RunMs = append(s.RunMs, ms(time.Since(t0)))
			t0 = time.Now()
			if _, err := dockerCLI(d, dockerScaleTimeout, "rm", "-f", "timed"); err != nil {
				r.Fatalf("%v", err)
			}
			s.RemoveMs = append(s.RemoveMs, ms(time.Since(t0)))
		}
		s.RSSKiB, s.DockerdRSSKiB = rss(h.DaemonPID()), rss(d.PID())
		out = append(out, s)
		log.Printf("docker run with %d containers done", n)
	}
	return out, ""
}

// dockerCLI runs the docker client against d for timeout at most; the
// error carries what the client printed.
func dockerCLI(d *testbed.Docker, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, testbed.DockerCLI, append([]string{"-H", d.Host}, args...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", args[0], err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// removeContainers removes every container of d, allowing a second for
// each, and the network they were on.
func removeContainers(d *testbed.Docker) {
	ids, err := dockerCLI(d, dockerScaleTimeout, "ps", "-aq")
	if err != nil {
		log.Printf("list containers to remove: %v", err)
		return
	}
	if ids := strings.Fields(ids); len(ids) > 0 {
		if _, err := dockerCLI(d, time.Minute+time.Duration(len(ids))*time.Second, append([]string{"rm", "-f"}, ids...)...); err != nil {
			log.Printf("remove %d containers: %v", len(ids), err)
		}
	}
	// docker rm may return before Docker has released the containers'
	// endpoints, and the network has active endpoints until it has.
	for try := 1; ; try++ {
		_, err := dockerCLI(d, dockerScaleTimeout, "network", "rm", dockerScaleNet)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "active endpoints") || try == 30 {
			log.Printf("%v", err)
			return
		}
		time.Sleep(time.Second)
	}
}

// dockerOp is one of the two commands timed at each N.
type dockerOp struct {
	what string
	ms   func(DockerScaleSample) []float64
}

var dockerOps = []dockerOp{
	{"docker run -d -p", func(s DockerScaleSample) []float64 { return s.RunMs }},
	{"docker rm -f", func(s DockerScaleSample) []float64 { return s.RemoveMs }},
}

// dockerScaleTable writes docker run and rm at scale.
func dockerScaleTable(b *strings.Builder, r Results) {
	if len(r.DockerScale) > 0 {
		b.WriteString("\n`docker run -d -p 19000:80` of a busybox container on an ebpfnet network, and `docker rm -f` of it, with N containers present on that network (each with a published port), " +
			"on a dockerd of its own (Docker's defaults, no docker-proxy); ms as the docker client takes them; ebpfnet's and dockerd's RSS at N:\n\n")
		b.WriteString("| N | docker run p50 / p99 | × N=1 | docker rm p50 / p99 | × N=1 | ebpfnet RSS MiB | dockerd RSS MiB |\n" +
			"| --- | --- | --- | --- | --- | --- | --- |\n")
		first := r.DockerScale[0]
		for _, s := range r.DockerScale {
			fmt.Fprintf(b, "| %d |", s.N)
			for _, op := range dockerOps {
				p50 := percentile(op.ms(s), 50)
				fmt.Fprintf(b, " %s / %s | %.2f |", num(p50), num(percentile(op.ms(s), 99)), p50/percentile(op.ms(first), 50))
			}
			fmt.Fprintf(b, " %.1f | %.1f |\n", float64(s.RSSKiB)/1024, float64(s.DockerdRSSKiB)/1024)
		}
	}
	if r.DockerScaleNote != "" {
		fmt.Fprintf(b, "\n%s\n", r.DockerScaleNote)
	}
}

// dockerScaleTargets: docker run and rm p50 at every N within scaleGoal
// of N=1.
func (r Results) dockerScaleTargets() []target {
	if len(r.DockerScale) < 2 {
		return nil
	}
	var out []target
	first := r.DockerScale[0]
	for _, s := range r.DockerScale[1:] {
		for _, op := range dockerOps {
			out = append(out, scaleTarget(op.what+" on an ebpfnet network", s.N, first.N, op.ms(s), op.ms(first)))
		}
	}
	return out
}
