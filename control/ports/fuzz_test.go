package ports

import (
	"strconv"
	"strings"
	"testing"
)

// Any -p spec is parsed or refused in one line naming it; what parses is
// a mapping a publication can be made of (or, for unpublish, a filter),
// and reads back as itself.
func FuzzSpecs(f *testing.F) {
	for _, s := range []string{"8080:80", "127.0.0.1:8080:80/udp", "[::1]:8080-8090:80-90", "80", "8000-8010/udp",
		"1.2.3.4:5:6:7", "nohost:80:80", "0.0.0.0::80", "65536:80", "8080:80/sctp", "-1:80", ":80", "::80", "[fe80::1%eth0]:80:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if m, err := ParsePublish(s); err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(s)) || strings.Contains(err.Error(), "\n") {
				t.Errorf("-p %q: %q does not name it on one line", s, err)
			}
		} else if err := m.CheckPublish(); err != nil || m.Port == 0 || m.Proto == "" {
			t.Errorf("-p %q parsed into %+v, which is no publication: %v", s, m, err)
		}
		if m, err := ParseUnpublish(s); err == nil {
			if err := m.CheckFilter(); err != nil {
				t.Errorf("unpublish %q parsed into %+v, which is no filter: %v", s, m, err)
			}
		} else if !strings.Contains(err.Error(), strconv.Quote(s)) || strings.Contains(err.Error(), "\n") {
			t.Errorf("unpublish %q: %q does not name it on one line", s, err)
		}
	})
}
