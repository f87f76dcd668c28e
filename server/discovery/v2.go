package discovery

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// etcd's v2 discovery errors.
var (
	ErrSizeNotFound         = errors.New("discovery: size key not found")
	ErrBadSizeKey           = errors.New("discovery: size key is bad")
	ErrDuplicateID          = errors.New("discovery: found duplicate id")
	ErrDuplicateName        = errors.New("discovery: found duplicate name")
	ErrFullCluster          = errors.New("discovery: cluster is full")
	ErrBadDiscoveryEndpoint = errors.New("discovery: bad discovery endpoint")
)

// V2 is etcd's --discovery: a discovery service speaking etcd's v2 keys
// protocol (discovery.etcd.io, or an etcd with the v2 API), at URL, whose
// path is the cluster's token. Each new member registers name=peerURLs
// under its id, then waits until the size the token was made for have
// registered; the first that many, in the order they registered, are the
// cluster.
type V2 struct {
	URL string
	// Proxy is an HTTP proxy for the service (--discovery-proxy).
	Proxy string
	// Client, if set, makes the requests (tests); else one is made.
	Client *http.Client
	Logger *slog.Logger
}

// v2Node and v2Response are the v2 keys API's JSON.
type v2Node struct {
	Key           string    `json:"key"`
	Value         string    `json:"value"`
	Dir           bool      `json:"dir"`
	Nodes         []*v2Node `json:"nodes"`
	CreatedIndex  uint64    `json:"createdIndex"`
	ModifiedIndex uint64    `json:"modifiedIndex"`
}

type v2Response struct {
	Action string  `json:"action"`
	Node   *v2Node `json:"node"`
	index  uint64  // X-Etcd-Index
}

type v2Error struct {
	Code    int    `json:"errorCode"`
	Message string `json:"message"`
}

func (e *v2Error) Error() string { return fmt.Sprintf("%d: %s", e.Code, e.Message) }

// v2 error codes.
const (
	v2KeyNotFound = 100
	v2NodeExist   = 105
)

// v2Client is one discovery attempt.
type v2Client struct {
	V2
	base  *url.URL // the service, without the token
	token string   // the URL's path
}

func (d V2) client() (*v2Client, error) {
	u, err := url.Parse(d.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("discovery: invalid URL %q", d.URL)
	}
	c := &v2Client{V2: d, token: u.Path}
	u.Path = ""
	c.base = u
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if d.Proxy != "" {
			p := d.Proxy
			if !strings.Contains(p, "://") {
				p = "http://" + p
			}
			pu, err := url.Parse(p)
			if err != nil {
				return nil, fmt.Errorf("invalid proxy address %q: %v", d.Proxy, err)
			}
			tr.Proxy = http.ProxyURL(pu)
		}
		c.Client = &http.Client{Transport: tr}
	}
	return c, nil
}

// do makes one request of the keys API at key.
func (c *v2Client) do(ctx context.Context, method, key string, query url.Values, form url.Values) (*v2Response, error) {
	u := *c.base
	u.Path = path.Join("/", key)
	u.RawQuery = query.Encode()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		var e v2Error
		if json.Unmarshal(data, &e) != nil || e.Code == 0 {
			return nil, fmt.Errorf("discovery: %s %s: %s", method, u.Path, resp.Status)
		}
		return nil, &e
	}
	var r v2Response
	if err := json.Unmarshal(data, &r); err != nil || r.Node == nil {
		return nil, ErrBadDiscoveryEndpoint
	}
	r.index, _ = strconv.ParseUint(resp.Header.Get("X-Etcd-Index"), 10, 64)
	return &r, nil
}

// Join registers the member (its id, and self: "name=peerURL,...") and
// returns the cluster, "name=URL,...", once it is whole. Network errors
// are retried (backing off to at most 4 minutes, as etcd) until ctx ends.
func (d V2) Join(ctx context.Context, id uint64, self string) (string, error) {
	c, err := d.client()
	if err != nil {
		return "", err
	}
	idKey := fmt.Sprintf("%x", id)
	if _, _, _, err := c.check(ctx, idKey); err != nil {
		return "", err
	}
	q := url.Values{"prevExist": {"false"}}
	created, err := retry(ctx, c, "registering", func() (*v2Response, error) {
		return c.do(ctx, http.MethodPut, path.Join(c.token, idKey), q, url.Values{"value": {self}})
	})
	var ve *v2Error
	if errors.As(err, &ve) && ve.Code == v2NodeExist {
		return "", ErrDuplicateID
	}
	if err != nil {
		return "", err
	}
	c.Logger.Info("registered with the discovery service", "discovery-url", c.URL, "self", idKey, "index", created.Node.CreatedIndex)
	nodes, size, index, err := c.check(ctx, idKey)
	if err != nil {
		return "", err
	}
	for uint64(len(nodes)) < size {
		c.Logger.Info("found peers from discovery server; waiting for more", "discovery-url", c.URL,
			"found-peers", len(nodes), "needed-peers", size-uint64(len(nodes)))
		q := url.Values{"wait": {"true"}, "recursive": {"true"}, "waitIndex": {strconv.FormatUint(index+1, 10)}}
		w, err := retry(ctx, c, "waiting for other nodes", func() (*v2Response, error) {
			return c.do(ctx, http.MethodGet, c.token, q, nil)
		})
		if err != nil {
			return "", err
		}
		index = w.Node.ModifiedIndex
		if w.Action == "create" || w.Action == "set" {
			if path.Base(w.Node.Key) != "_config" && !slices.ContainsFunc(nodes, func(n *v2Node) bool { return n.Key == w.Node.Key }) {
				c.Logger.Info("found peer from discovery server", "discovery-url", c.URL, "peer", path.Base(w.Node.Key))
				nodes = append(nodes, w.Node)
			}
		}
	}
	c.Logger.Info("found all needed peers from discovery server", "discovery-url", c.URL, "found-peers", len(nodes))
	return nodesToCluster(nodes[:size], size)
}

// check reads the token's size and the members registered so far, in
// the order they registered; it refuses a cluster full without idKey.
func (c *v2Client) check(ctx context.Context, idKey string) (nodes []*v2Node, size, index uint64, err error) {
	r, err := retry(ctx, c, "cluster status check", func() (*v2Response, error) {
		return c.do(ctx, http.MethodGet, path.Join(c.token, "_config", "size"), url.Values{"quorum": {"false"}}, nil)
	})
	var ve *v2Error
	if errors.As(err, &ve) && ve.Code == v2KeyNotFound {
		return nil, 0, 0, ErrSizeNotFound
	}
	if err != nil {
		return nil, 0, 0, err
	}
	if size, err = strconv.ParseUint(r.Node.Value, 10, 0); err != nil || size == 0 {
		return nil, 0, 0, ErrBadSizeKey
	}
	r, err = retry(ctx, c, "cluster status check", func() (*v2Response, error) {
		return c.do(ctx, http.MethodGet, c.token, url.Values{"quorum": {"false"}}, nil)
	})
	if err != nil {
		return nil, 0, 0, err
	}
	for _, n := range r.Node.Nodes {
		if path.Base(n.Key) != "_config" {
			nodes = append(nodes, n)
		}
	}
	slices.SortFunc(nodes, func(a, b *v2Node) int { return cmp.Compare(a.CreatedIndex, b.CreatedIndex) })
	for i, n := range nodes {
		if path.Base(n.Key) == idKey {
			break
		}
		if uint64(i) >= size-1 {
			return nodes[:size], size, r.index, ErrFullCluster
		}
	}
	return nodes, size, r.index, nil
}

// retry calls f until it answers, or fails with the service's error, or
// ctx ends; network errors are retried with etcd's backoff.
func retry(ctx context.Context, c *v2Client, step string, f func() (*v2Response, error)) (*v2Response, error) {
	for tries := 0; ; tries++ {
		r, err := f()
		var ve *v2Error
		if err == nil || errors.As(err, &ve) || errors.Is(err, ErrBadDiscoveryEndpoint) || ctx.Err() != nil {
			return r, err
		}
		backoff := time.Duration(1<<min(tries, 8)) * time.Second
		c.Logger.Info("retry connecting to discovery service", "url", c.URL, "reason", step, "error", err.Error(), "backoff", backoff.String())
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
	}
}

// nodesToCluster is the cluster the registrations make; two with the
// same name are refused.
func nodesToCluster(nodes []*v2Node, size uint64) (string, error) {
	parts := make([]string, len(nodes))
	names := map[string]bool{}
	for i, n := range nodes {
		parts[i] = n.Value
		for _, p := range strings.Split(n.Value, ",") {
			name, _, _ := strings.Cut(p, "=")
			names[name] = true
		}
	}
	s := strings.Join(parts, ",")
	if uint64(len(names)) != size {
		return s, ErrDuplicateName
	}
	return s, nil
}
