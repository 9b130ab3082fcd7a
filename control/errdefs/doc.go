// Package errdefs names the kinds of failure a caller can act on: the
// request is invalid, what it names does not exist, or it conflicts with
// the state. The engine marks its errors with a kind where they arise; the
// API answers 400, 404 or 409 from the kind and its client marks the error
// again, so a frontend on either side of the socket asks errors.Is alike.
//
// A mark never changes an error's message. errdefs imports nothing of
// ebpfnet's: every layer may use it.
package errdefs
