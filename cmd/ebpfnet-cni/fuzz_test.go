package main

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
)

// Whatever configuration a runtime hands over (stdin: the network's
// configuration, its runtimeConfig and prevResult), every command answers
// with a result or a one-line error, and never panics.
func FuzzNetworkConfiguration(f *testing.F) {
	for _, rest := range []string{
		`,"network":"app","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}],` +
			`"ips":["10.88.0.9/16","fd00:88::9/64"],"mac":"02:42:0a:58:00:09","aliases":{"podnet":["web"]}}`,
		`,"network":"app","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80,"protocol":"sctp"}],"ips":["nonsense"]}`,
		`,"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"cni0"},{"name":"veth1"},{"name":"eth0","sandbox":"/run/netns/c1"}],` +
			`"ips":[{"interface":2,"address":"10.22.0.5/16","gateway":"10.22.0.1"}]}`,
		`,"prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","interface":9,"address":"10.22.0.5/16"}]}`,
		`,"network":"app","runtimeConfig":{"ips":["10.88.0.9","10.88.0.10"]}`, `}`, `,"network":7`,
	} {
		f.Add(rest)
	}
	d := &daemon{}
	socket := serve(f, d)
	commands := map[string]func(*skel.CmdArgs) error{"ADD": addRouted, "DEL": del, "CHECK": check}
	f.Fuzz(func(t *testing.T, rest string) {
		for name, cmd := range commands {
			d.attach.Address = "10.88.0.9/16" // the daemon's answer, whatever was asked
			if _, err := run(t, cmd, config("1.0.0", socket, rest)); err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("%s with %s: an error of more than one line: %q", name, rest, err)
			}
		}
	})
}
