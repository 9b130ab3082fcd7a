// Package macvlan is the macvlan driver: each endpoint is a bridge-mode
// child of a parent interface, made inside the sandbox. The datapath does
// not serve these networks; they have no host side.
package macvlan
