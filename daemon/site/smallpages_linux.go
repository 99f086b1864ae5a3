package site

import (
	"os"

	"golang.org/x/sys/unix"
)

// openSmallPages opens the database file so that the page cache holds it in single pages:
// what an earlier open left cached is dropped (unless mapped) and reads do no read-ahead. A
// commit dirties whole folios, so a meta page cached inside a 64 KiB folio (as read-ahead
// or one large write leave it) costs the flash 64 KiB at every commit instead of 4.
func openSmallPages(name string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
	unix.Fadvise(fd, 0, 0, unix.FADV_RANDOM)
	return f, nil
}
