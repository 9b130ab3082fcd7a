// Package ports describes published ports the way every frontend hands
// them over: a protocol, a host address, a range of host ports and the
// sandbox ports they lead to (Mapping), and builds them from what each
// way in is given. Docker's portmap (Proto 6/17, HostPortEnd) and CNI's
// portMappings convert to a Mapping field by field and are added to a
// frontend's list with Add, which reads the host address as runtimes send
// it; the CLI's -p specs, docker run's grammar, are parsed here too
// (ParsePublish), with the parser docker run uses.
//
// ports is plain data, its checks and its syntax: it knows no store and
// no kernel, so the CLI and the CNI plugin link it without the daemon.
package ports
