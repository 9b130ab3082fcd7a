package store

import (
	"crypto/rand"
	"encoding/hex"
	"regexp"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// NewID is a new record ID: 64 hex digits, as Docker's.
func NewID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// validName is Docker's rule for network and container names; it also keeps
// names safe as file names under /run/netns and /etc/netns.
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// CheckName refuses a name a record of kind cannot have.
func CheckName(kind, name string) error {
	if !validName.MatchString(name) || len(name) > 64 {
		return errdefs.Invalidf("invalid %s name %q: use 1-64 letters, digits, '_', '.', '-', starting with a letter or digit", kind, name)
	}
	return nil
}
