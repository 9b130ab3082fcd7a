// Package failpoint marks the steps of a change at which the tests make the
// daemon die, as a kill -9 there would, or the kernel refuse, with an
// errno: every change must then be wholly made or wholly undone once the
// daemon is back. A binary built without the failpoints tag (every binary
// but the tests') has none: Hit returns nil, and the compiler drops the
// call.
//
// Built with the tag, the daemon reads two paths from its environment.
// EBPFNET_FAILPOINTS_FILE names a file of NAME[@N]=ACTION entries (comma-
// or newline-separated), where ACTION is "crash" or an errno's name
// (ENOSPC, EEXIST…) and N the hit of NAME it waits for (the first by
// default), each firing once; the file is read again whenever it changes,
// and the hits are counted from then on, so that a test arms a failpoint
// for the one change it makes next. EBPFNET_FAILPOINTS_TRACE names a file
// each hit's NAME is appended to: the steps a change goes through.
package failpoint
