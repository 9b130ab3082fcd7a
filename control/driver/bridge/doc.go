// Package bridge is the bridge driver: a Linux bridge holding the gateway
// address, and a veth pair per endpoint whose host side the datapath's
// endpoint programs serve.
package bridge
