package discovery

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testdiscovery"
)

// TestV2Join: members registering together get the same cluster, in the
// order they registered; one more is refused (the cluster is full), as are
// an id registered twice and a token without a size. Through
// --discovery-proxy, the requests go through the proxy.
func TestV2Join(t *testing.T) {
	f := testdiscovery.NewService("tok", 3)
	srv := httptest.NewServer(f)
	defer srv.Close()
	d := V2{URL: srv.URL + "/tok"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make([]string, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = d.Join(ctx, uint64(i+1), fmt.Sprintf("m%d=http://127.0.0.%d:2380", i+1, i+1))
		}()
	}
	wg.Wait()
	for i := range 3 {
		require.NoError(t, errs[i])
		require.Equal(t, got[0], got[i])
	}
	require.Equal(t, strings.Join(f.Registered(), ","), got[0], "in the order they registered")

	_, err := d.Join(ctx, 9, "m9=http://127.0.0.9:2380")
	require.ErrorIs(t, err, ErrFullCluster)

	f2 := testdiscovery.NewService("tok", 2)
	srv2 := httptest.NewServer(f2)
	defer srv2.Close()
	var proxied atomic.Int64
	target, _ := url.Parse(srv2.URL)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer proxy.Close()
	d2 := V2{URL: "http://discovery.invalid/tok", Proxy: proxy.URL}
	join := make(chan error, 1)
	go func() { _, err := d2.Join(ctx, 1, "a=http://127.0.0.1:2380"); join <- err }()
	_, err = V2{URL: "http://discovery.invalid/tok", Proxy: proxy.URL}.Join(ctx, 2, "b=http://127.0.0.2:2380")
	require.NoError(t, err)
	require.NoError(t, <-join)
	require.Positive(t, proxied.Load(), "requests through --discovery-proxy")
	_, err = V2{URL: srv2.URL + "/tok"}.Join(ctx, 1, "a=http://127.0.0.1:2380")
	require.ErrorIs(t, err, ErrDuplicateID, "an id registered before")

	srv3 := httptest.NewServer(testdiscovery.NewService("tok", 0))
	defer srv3.Close()
	_, err = V2{URL: srv3.URL + "/tok"}.Join(ctx, 1, "a=http://127.0.0.1:2380")
	require.ErrorIs(t, err, ErrSizeNotFound)
}
