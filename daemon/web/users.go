package web

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strings"

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
	u := &Users{hashes: map[string][]byte{}}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" || !strings.HasPrefix(hash, "$2") {
			return nil, fmt.Errorf("web: %s:%d: want name:bcrypt-hash", path, n)
		}
		u.hashes[name] = []byte(hash)
	}
	return u, sc.Err()
}

// dummy keeps the time of a check for an unknown user like that of a known one.
var dummy, _ = bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)

// Check reports whether name and password match.
func (u *Users) Check(name, password string) bool {
	if u == nil {
		return false
	}
	h, ok := u.hashes[name]
	if !ok {
		bcrypt.CompareHashAndPassword(dummy, []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword(h, []byte(password)) == nil
}

// needLogin guards a control action. HTTP Basic credentials are checked against the users
// file; without a users file no control action is possible from the web.
func (s *Server) needLogin(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.users == nil {
			httpError(w, http.StatusForbidden, "control actions need web.users_file in the config")
			return
		}
		name, pass, ok := r.BasicAuth()
		if !ok || !s.users.Check(name, pass) {
			w.Header().Set("WWW-Authenticate", `Basic realm="rackwatch"`)
			httpError(w, http.StatusUnauthorized, "login needed")
			return
		}
		h(w, r, name)
	}
}
