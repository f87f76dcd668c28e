// Package testdiscovery is an etcd v2 discovery service for tests.
package testdiscovery

import (
	"encoding/json"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
)

// The v2 keys API's JSON, as the service writes it.
type node struct {
	Key           string  `json:"key"`
	Value         string  `json:"value,omitempty"`
	Dir           bool    `json:"dir,omitempty"`
	Nodes         []*node `json:"nodes,omitempty"`
	CreatedIndex  uint64  `json:"createdIndex"`
	ModifiedIndex uint64  `json:"modifiedIndex"`
}

type response struct {
	Action string `json:"action"`
	Node   *node  `json:"node"`
}

type apiError struct {
	Code    int    `json:"errorCode"`
	Message string `json:"message"`
}

const (
	keyNotFound = 100
	nodeExist   = 105
)

// Service is a discovery service in memory: etcd's v2 keys protocol for
// the keys --discovery uses (a token's _config/size, members registered
// under it, waits for the next one).
type Service struct {
	mu    sync.Mutex
	cond  *sync.Cond
	index uint64
	keys  map[string]*node // by full key
	order []*node          // every create, in order
}

// NewService serves token, made for size members (0: no size key).
func NewService(token string, size int) *Service {
	f := &Service{keys: map[string]*node{}}
	f.cond = sync.NewCond(&f.mu)
	if size > 0 {
		f.index++
		f.keys["/"+token+"/_config/size"] = &node{Key: "/" + token + "/_config/size", Value: strconv.Itoa(size), CreatedIndex: f.index, ModifiedIndex: f.index}
	}
	return f
}

// ServeHTTP answers one request of the keys API.
// ServeHTTP answers one request of the keys API.
func (f *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := path.Clean(r.URL.Path)
	reply := func(code int, v any) {
		w.Header().Set("X-Etcd-Index", strconv.FormatUint(f.index, 10))
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	switch {
	case r.Method == http.MethodPut:
		_ = r.ParseForm()
		if _, ok := f.keys[key]; ok && r.URL.Query().Get("prevExist") == "false" {
			reply(http.StatusPreconditionFailed, apiError{Code: nodeExist, Message: "Key already exists"})
			return
		}
		f.index++
		n := &node{Key: key, Value: r.PostForm.Get("value"), CreatedIndex: f.index, ModifiedIndex: f.index}
		f.keys[key], f.order = n, append(f.order, n)
		f.cond.Broadcast()
		reply(http.StatusCreated, response{Action: "create", Node: n})
	case r.URL.Query().Get("wait") == "true":
		after, _ := strconv.ParseUint(r.URL.Query().Get("waitIndex"), 10, 64)
		for {
			for _, n := range f.order {
				if n.CreatedIndex >= after && strings.HasPrefix(n.Key, key+"/") {
					reply(http.StatusOK, response{Action: "create", Node: n})
					return
				}
			}
			f.cond.Wait()
		}
	default:
		if n, ok := f.keys[key]; ok {
			reply(http.StatusOK, response{Action: "get", Node: n})
			return
		}
		dir := &node{Key: key, Dir: true}
		for k, n := range f.keys {
			if path.Dir(k) == key {
				dir.Nodes = append(dir.Nodes, n)
			}
		}
		if strings.Count(key, "/") == 1 { // the token's directory always exists
			dir.Nodes = append(dir.Nodes, &node{Key: key + "/_config", Dir: true})
			reply(http.StatusOK, response{Action: "get", Node: dir})
			return
		}
		reply(http.StatusNotFound, apiError{Code: keyNotFound, Message: "Key not found"})
	}
}

// Registered is the values registered, in order.
func (f *Service) Registered() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, n := range f.order {
		out = append(out, n.Value)
	}
	return out
}
