// Package ports describes published ports the way every frontend hands
// them over: a protocol, a host address, a range of host ports and the
// sandbox ports they lead to. Docker's portmap (Proto 6/17, HostPortEnd)
// and CNI's portMappings convert to a Mapping field by field; the CLI's
// -p grammar is parsed into one by its frontend.
//
// ports is plain data and its checks: it knows no user syntax, no store
// and no kernel.
package ports
