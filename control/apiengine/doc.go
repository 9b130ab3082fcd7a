// Package apiengine is the engine as the API asks for it: it implements
// api.Engine and api.RuntimeEngine, the interfaces their user, the API's
// server (and Docker's plugin, in process), defines, over the engine.
//
// It decodes the requests' addresses once, at this edge, into the engine's
// typed specs, names a runtime's attachments after its container and
// interface, and turns store records into the API's read models. It does
// no work of its own: every change is the engine's, which knows nothing of
// the API's requests or views. It holds no state and no lock.
package apiengine
