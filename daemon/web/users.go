package web

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// Users holds web.users_file: "name:bcrypt-hash" lines; # starts a comment.
type Users struct {
	hashes map[string][]byte
}

// LoadUsers reads a users file.
func LoadUsers(path string) (*Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("web: users file: %w", err)
	}
	defer f.Close()
	return ParseUsers(path, f)
}

// ParseUsers reads users-file lines from r; name is used in error messages.
func ParseUsers(name string, r io.Reader) (*Users, error) {
	u := &Users{hashes: map[string][]byte{}}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		user, hash = strings.TrimSpace(user), strings.TrimSpace(hash)
		if !ok || user == "" || !strings.HasPrefix(hash, "$2") {
			return nil, fmt.Errorf("web: %s:%d: want name:bcrypt-hash", name, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("web: %s:%d: user %s: not a bcrypt hash: %w", name, n, user, err)
		}
		u.hashes[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("web: %s: %w", name, err)
	}
	return u, nil
}

// Len is the number of users.
func (u *Users) Len() int {
	if u == nil {
		return 0
	}
	return len(u.hashes)
}

// Has reports whether name is a user.
func (u *Users) Has(name string) bool {
	if u == nil {
		return false
	}
	_, ok := u.hashes[name]
	return ok
}

// dummy keeps the time of a check for an unknown user like that of a known one; made on
// first use so that starting the daemon does not pay for it.
var dummy = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.DefaultCost)
	return h
})

// Check reports whether name and password match.
func (u *Users) Check(name, password string) bool {
	if u == nil {
		return false
	}
	h, ok := u.hashes[name]
	if !ok {
		bcrypt.CompareHashAndPassword(dummy(), []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword(h, []byte(password)) == nil
}
