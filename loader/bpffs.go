package loader

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const defaultBPFFS = "/sys/fs/bpf"

// ensureBPFFS makes dir a directory on a bpffs, mounting one where none is:
// on /sys/fs/bpf when dir is below it (the conventional place other tools
// look), else on dir itself.
func ensureBPFFS(dir string) error {
	if strings.HasPrefix(filepath.Clean(dir)+"/", defaultBPFFS+"/") && !isBPFFS(defaultBPFFS) {
		if err := mountBPFFS(defaultBPFFS); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin directory %s: %w", dir, err)
	}
	if isBPFFS(dir) {
		return nil
	}
	return mountBPFFS(dir)
}

func isBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

func mountBPFFS(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create bpffs mount point %s: %w", dir, err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return nil
}
