package auth

import (
	"crypto/rand"
	"fmt"
	"sync"
	"time"
)

// Caller is who sent a request while auth is on: the user its token (or
// client certificate) names, and the auth revision its permissions are
// checked at: a JWT's is the one it was minted at; a simple token's is
// the store's current one, as etcd's (its provider answers 0, and the
// member fills it in). A request with no token has neither.
type Caller struct {
	Name string
	Rev  uint64
}

// tokens are the simple tokens in use: each names a user, and lapses after ttl without use. They are minted through the
// log (so every member knows them) and kept in memory only, as etcd's.
type tokens struct {
	ttl time.Duration

	mu        sync.Mutex
	byToken   map[string]*tokenInfo
	lastSweep time.Time
}

type tokenInfo struct {
	user    string
	expires time.Time
}

func newTokens(ttl time.Duration) *tokens {
	return &tokens{ttl: ttl, byToken: map[string]*tokenInfo{}}
}

func (t *tokens) Assign(prefix string, index uint64, user string, _ uint64) (string, error) {
	token := fmt.Sprintf("%s.%d", prefix, index)
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if now.Sub(t.lastSweep) > t.ttl {
		for k, ti := range t.byToken {
			if now.After(ti.expires) {
				delete(t.byToken, k)
			}
		}
		t.lastSweep = now
	}
	t.byToken[token] = &tokenInfo{user: user, expires: now.Add(t.ttl)}
	return token, nil
}

// Info returns the token's user (revision 0: the current one), and keeps
// it alive.
func (t *tokens) Info(token string) (Caller, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ti := t.byToken[token]
	now := time.Now()
	if ti == nil || now.After(ti.expires) {
		delete(t.byToken, token)
		return Caller{}, false
	}
	ti.expires = now.Add(t.ttl)
	return Caller{Name: ti.user}, true
}

func (t *tokens) CanSign() bool { return true }

// InvalidateAll drops every token (auth turned off, as etcd's).
func (t *tokens) InvalidateAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.byToken)
}

// InvalidateUser drops a user's tokens (deleted, or a new password).
func (t *tokens) InvalidateUser(user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, ti := range t.byToken {
		if ti.user == user {
			delete(t.byToken, k)
		}
	}
}

// NewPrefix returns a simple token's random part: 16 letters, as etcd's; the
// raft index that minted it follows after a dot.
func NewPrefix() string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}
