package loader

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/btf"

	"github.com/ebpfnet/ebpfnet/bpf"
)

// DefaultCTTimeouts are the conntrack lifetimes the programs are built
// with (netfilter's), read from the endpoint object itself.
func DefaultCTTimeouts() (CTTimeouts, error) {
	var t CTTimeouts
	spec, err := bpf.LoadEndpoint()
	if err != nil {
		return t, err
	}
	v, ok := spec.Variables["ct_timeouts"]
	if !ok {
		return t, fmt.Errorf("the endpoint programs have no ct_timeouts")
	}
	if err := v.Get(&t); err != nil {
		return t, fmt.Errorf("read default conntrack timeouts: %w", err)
	}
	return t, nil
}

// CTTimeoutNames lists the states whose lifetimes can be set, as C names
// them in struct ct_timeouts (tcp_established, udp, …).
func CTTimeoutNames() ([]string, error) {
	st, err := ctTimeoutsType()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range st.Members {
		names = append(names, m.Name)
	}
	return names, nil
}

// SetCTTimeout applies one NAME=SECONDS setting to t. The names are the C
// struct's members, read from BTF, so there is no second list to keep.
func SetCTTimeout(t *CTTimeouts, setting string) error {
	name, value, ok := strings.Cut(setting, "=")
	secs, err := strconv.ParseUint(value, 10, 32)
	if !ok || err != nil || secs == 0 {
		return fmt.Errorf("invalid conntrack timeout %q: want STATE=SECONDS, seconds from 1", setting)
	}
	st, err := ctTimeoutsType()
	if err != nil {
		return err
	}
	for _, m := range st.Members {
		if m.Name != name {
			continue
		}
		buf, err := binary.Append(nil, binary.NativeEndian, t)
		if err != nil {
			return err
		}
		binary.NativeEndian.PutUint32(buf[m.Offset.Bytes():], uint32(secs))
		_, err = binary.Decode(buf, binary.NativeEndian, t)
		return err
	}
	names, _ := CTTimeoutNames()
	return fmt.Errorf("invalid conntrack timeout %q: no state %q (known: %s)", setting, name, strings.Join(names, ", "))
}

func ctTimeoutsType() (*btf.Struct, error) {
	spec, err := bpf.LoadDatapath()
	if err != nil {
		return nil, err
	}
	var st *btf.Struct
	if err := spec.Types.TypeByName("ct_timeouts", &st); err != nil {
		return nil, fmt.Errorf("find struct ct_timeouts in BTF: %w", err)
	}
	return st, nil
}
