package errdefs

import (
	"errors"
	"fmt"
)

// The kinds. Test for them with errors.Is; an error of none of them is the
// daemon's own failure (the kernel refused, the state file broke).
var (
	// ErrInvalid: the request can never succeed as written.
	ErrInvalid = errors.New("invalid")
	// ErrNotFound: the request names something that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the request clashes with the state (a name, an address
	// or a port is taken, something is still in use); it may succeed later.
	ErrConflict = errors.New("conflict")
)

// marked is an error with a kind that its message does not show.
type marked struct{ err, kind error }

func (m marked) Error() string   { return m.err.Error() }
func (m marked) Unwrap() []error { return []error{m.err, m.kind} }

// Mark gives err a kind; nil stays nil.
func Mark(err, kind error) error {
	if err == nil {
		return nil
	}
	return marked{err, kind}
}

// Invalid marks err as ErrInvalid.
func Invalid(err error) error { return Mark(err, ErrInvalid) }

// Conflict marks err as ErrConflict.
func Conflict(err error) error { return Mark(err, ErrConflict) }

// NotFound marks err as ErrNotFound.
func NotFound(err error) error { return Mark(err, ErrNotFound) }

// Invalidf formats an ErrInvalid error.
func Invalidf(format string, args ...any) error { return Invalid(fmt.Errorf(format, args...)) }

// Conflictf formats an ErrConflict error.
func Conflictf(format string, args ...any) error { return Conflict(fmt.Errorf(format, args...)) }

// NotFoundf formats an ErrNotFound error.
func NotFoundf(format string, args ...any) error { return NotFound(fmt.Errorf(format, args...)) }

// Kind is the kind of err: ErrInvalid, ErrNotFound, ErrConflict, or nil
// for none of them.
func Kind(err error) error {
	for _, k := range []error{ErrNotFound, ErrConflict, ErrInvalid} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
