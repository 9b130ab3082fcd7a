package testbed

import (
	be "encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/namespace"
)

// SYNFlood sends TCP SYNs with forged sources (random addresses of
// 198.18.0.0/15, the benchmarking range, and random ports) to dst, as
// Ethernet frames on interface ifname of the namespace at nsPath, to the
// MAC dstMAC. It stops after max frames or when d has passed, whichever
// comes first, and returns how many it sent.
func SYNFlood(nsPath, ifname string, dstMAC net.HardwareAddr, dst netip.AddrPort, max int, d time.Duration) (int, error) {
	return sendSYNs(nsPath, ifname, dstMAC, dst, max, d, func() netip.Addr {
		return netip.AddrFrom4([4]byte{198, 18 + byte(rand.IntN(2)), byte(rand.IntN(256)), byte(rand.IntN(256))})
	})
}

// ForgedSYNs sends n TCP SYNs from src (random ports) to dst, as
// SYNFlood does: for sources no stack would send from.
func ForgedSYNs(nsPath, ifname string, dstMAC net.HardwareAddr, src netip.Addr, dst netip.AddrPort, n int) error {
	_, err := sendSYNs(nsPath, ifname, dstMAC, dst, n, 10*time.Second, func() netip.Addr { return src })
	return err
}

func sendSYNs(nsPath, ifname string, dstMAC net.HardwareAddr, dst netip.AddrPort, max int, d time.Duration, source func() netip.Addr) (int, error) {
	sent := 0
	err := namespace.Do(nsPath, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return fmt.Errorf("open packet socket: %w", err)
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(to.Addr[:], dstMAC)
		frame := synFrame(ifi.HardwareAddr, dstMAC, dst)
		deadline := time.Now().Add(d)
		for sent < max {
			if sent%1024 == 0 && time.Now().After(deadline) {
				break
			}
			forge(frame, source(), uint16(1024+rand.IntN(64000)))
			if err := unix.Sendto(fd, frame, 0, to); err != nil {
				if err == unix.ENOBUFS {
					continue
				}
				return fmt.Errorf("send forged SYN: %w", err)
			}
			sent++
		}
		return nil
	})
	return sent, err
}

// synFrame is an Ethernet, IPv4 and TCP SYN frame to dst; forge fills in
// its source.
func synFrame(src, dst net.HardwareAddr, to netip.AddrPort) []byte {
	f := make([]byte, 14+20+20)
	copy(f[0:], dst)
	copy(f[6:], src)
	be.BigEndian.PutUint16(f[12:], unix.ETH_P_IP)
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_TCP
	be.BigEndian.PutUint16(ip[2:], 40)
	d := to.Addr().As4()
	copy(ip[16:], d[:])
	tcp := f[34:]
	be.BigEndian.PutUint16(tcp[2:], to.Port())
	tcp[12], tcp[13] = 5<<4, 0x02
	be.BigEndian.PutUint16(tcp[14:], 64240)
	return f
}

// forge sets a frame's source address and port, with valid checksums.
func forge(f []byte, src netip.Addr, port uint16) {
	ip, tcp := f[14:34], f[34:]
	s := src.As4()
	copy(ip[12:], s[:])
	be.BigEndian.PutUint16(ip[10:], 0)
	be.BigEndian.PutUint16(ip[10:], csum(ip, 0))
	be.BigEndian.PutUint16(tcp[0:], port)
	be.BigEndian.PutUint32(tcp[4:], rand.Uint32())
	be.BigEndian.PutUint16(tcp[16:], 0)
	var pseudo uint32
	for i := 12; i < 20; i += 2 {
		pseudo += uint32(be.BigEndian.Uint16(ip[i:]))
	}
	pseudo += unix.IPPROTO_TCP + uint32(len(tcp))
	be.BigEndian.PutUint16(tcp[16:], csum(tcp, pseudo))
}

func csum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(be.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
