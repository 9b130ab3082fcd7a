// Command buildtools builds the programs the tests drive that Debian does
// not package (testbed.Tools) from the module proxy, into the directory
// the tests take them from (testbed.ToolsDir), unless an earlier run did:
// make test-tools runs it before the tests, for the tests' time to be
// theirs alone.
package main

import (
	"fmt"
	"os"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

func main() {
	for _, t := range testbed.Tools {
		bin, err := t.Build()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(bin)
	}
}
