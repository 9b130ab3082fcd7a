// Package sandbox is the frontend of the CLI's sandboxes: the user syntax
// they are described in. It turns docker run's -p grammar into structured
// port mappings, which is all the daemon receives.
//
// It calls nothing below the API's types: no engine, store or kernel.
package sandbox
