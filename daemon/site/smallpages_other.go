//go:build !linux

package site

import "os"

// openSmallPages is os.OpenFile: the page-cache advice is Linux's.
func openSmallPages(name string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag, perm)
}
