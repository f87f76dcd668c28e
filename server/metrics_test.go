package server

import (
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestExtensiveMetrics: --metrics=extensive adds grpc_server_handling_seconds
// for each method called; basic, the default, does not.
func TestExtensiveMetrics(t *testing.T) {
	for _, extensive := range []bool{true, false} {
		s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "m"), func(cfg *Config) { cfg.ExtensiveMetrics = extensive })
		_, err := c.Put(ctxT(t), "k", "v")
		require.NoError(t, err)
		resp, err := http.Get(s.ClientURLs()[0] + "/metrics")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		has := func(s string) bool { return regexpContains(string(body), s) }
		require.Equal(t, extensive, has(`grpc_server_handling_seconds_bucket\{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary",le="0.005"\}`))
		require.True(t, has(`grpc_server_handled_total\{grpc_code="OK",grpc_method="Put"`))
	}
}

// regexpContains reports whether s holds a match of expr.
func regexpContains(s, expr string) bool { return regexp.MustCompile(expr).MatchString(s) }
