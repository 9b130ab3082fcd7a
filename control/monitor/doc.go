// Package monitor is the hub of the datapath's events: it owns the
// events ring buffer's one reader, its goroutine and the monitor map that
// switches the datapath's events on and off, and hands each event, named,
// to the `ebpfnet monitor` clients that asked for its type.
//
// The datapath writes events only while a client listens: the first
// client opens the ring buffer and sets the monitor map, the last clears
// it and closes the ring buffer, so a daemon without clients costs each
// packet one array lookup. A client that falls behind loses events; the
// others and the datapath never wait for it.
//
// Events carry interface indexes and addresses; the sandboxes and
// networks they belong to are asked of a Namer, which the engine provides.
// The package never reads the store, enters a namespace or imports the
// engine.
package monitor
