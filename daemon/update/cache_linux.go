package update

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCache asks the kernel to forget the cached pages of f (a block device: BLKFLSBUF
// would need root and the whole device; fadvise is enough for a read-back of what was
// synced).
func dropCache(f *os.File) {
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
