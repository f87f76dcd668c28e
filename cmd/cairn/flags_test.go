package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-kv/cairn/internal/testdns"
	"github.com/stretchr/testify/require"
)

// etcdHelp is `etcd --help` of etcd 3.5 (the version bench/etcd35 pins):
// the list of flags cairn must take.
const etcdHelp = "testdata/etcd-3.5-help.txt"

// defaultDiffers are the flags whose default in cairn is not etcd's, and
// why.
var defaultDiffers = map[string]string{
	"data-dir":                    "${name}.cairn: a cairn data dir is not an etcd one, so the two never share a default",
	"listen-client-urls":          "127.0.0.1, not every address localhost resolves to",
	"advertise-client-urls":       "127.0.0.1, as listen-client-urls",
	"initial-advertise-peer-urls": "127.0.0.1, as listen-client-urls",
	"initial-cluster":             "empty means this member alone at its advertised peer URLs, which etcd's default spells out",
}

// helpFlags reads the flags and their shown defaults from a --help text:
// lines "  --name 'default'" or "  --name 10" or "  --name".
func helpFlags(t *testing.T, text string) (names []string, defaults map[string]string) {
	defaults = map[string]string{}
	re := regexp.MustCompile(`^  --([a-z0-9-]+)(?: (.*))?$`)
	for _, line := range strings.Split(text, "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		names = append(names, m[1])
		defaults[m[1]] = m[2]
	}
	return names, defaults
}

// sameDefault compares a default as --help shows it with a flag's.
func sameDefault(f *flag.Flag, shown string) bool {
	if shown == "" || strings.Contains(shown, "${") {
		return true // not shown, or shown as what it stands for
	}
	shown = strings.Trim(shown, "'")
	if shown == "math.MaxUint32" {
		shown = "4294967295"
	}
	if g, ok := f.Value.(flag.Getter); ok {
		if d, isDuration := g.Get().(time.Duration); isDuration {
			if shown == "" {
				return d == 0 // etcd shows a zero duration as ''
			}
			want, err := time.ParseDuration(shown)
			return err == nil && want == d
		}
	}
	return shown == f.DefValue
}

// TestEveryEtcdFlag: every flag etcd 3.5 takes, cairn takes by the same
// name with the same default, from the command line, from ETCD_<NAME>, and
// from a configuration file under etcd's key.
func TestEveryEtcdFlag(t *testing.T) {
	// --discovery-srv's records: this member alone, at its default URL.
	dns := withTestDNS(t)
	dns.AddA("m.cairn.test", net.IPv4(127, 0, 0, 1))
	dns.AddSRV("_etcd-server._tcp.cairn.test", testdns.SRV{Target: "m.cairn.test", Port: 2380})
	dns.AddSRV("_etcd-server-named._tcp.cairn.test", testdns.SRV{Target: "m.cairn.test", Port: 2380})

	text, err := os.ReadFile(etcdHelp)
	require.NoError(t, err)
	names, defaults := helpFlags(t, string(text))
	require.Len(t, names, 109, "etcd 3.5's --help lists 109 flags")
	base, fs, err := parseFlagSet(nil, nil, io.Discard)
	require.NoError(t, err)
	for _, name := range names {
		f := fs.Lookup(name)
		if !assertFlag(t, f != nil, "etcd's --%s is unknown to cairn", name) {
			continue
		}
		if _, differs := defaultDiffers[name]; !differs {
			require.True(t, sameDefault(f, defaults[name]), "--%s: default %q, etcd's %q", name, f.DefValue, defaults[name])
		}
		if name == "version" || name == "config-file" {
			continue
		}
		v := sample(f)
		want := v
		if shown, ok := shownAs[name]; ok {
			want = shown
		}
		with := map[string]string{name: v}
		if c, ok := companions[name]; ok {
			with[c[0]] = c[1]
		}
		ways := map[string]func() (*options, *flag.FlagSet, error){
			"command line": func() (*options, *flag.FlagSet, error) {
				var args []string
				for k, v := range with {
					args = append(args, "--"+k+"="+v)
				}
				return parseFlagSet(args, nil, io.Discard)
			},
			"environment": func() (*options, *flag.FlagSet, error) {
				env := map[string]string{}
				for k, v := range with {
					env["ETCD_"+strings.ToUpper(strings.ReplaceAll(k, "-", "_"))] = v
				}
				return parseFlagSet(nil, env, io.Discard)
			},
			"config file": func() (*options, *flag.FlagSet, error) {
				path := filepath.Join(t.TempDir(), "etcd.yaml")
				var yaml string
				for k, v := range with {
					yaml += yamlFor(k, v)
				}
				require.NoError(t, os.WriteFile(path, []byte(yaml), 0o600))
				return parseFlagSet([]string{"--config-file", path}, nil, io.Discard)
			},
		}
		for way, parse := range ways {
			o, fs, err := parse()
			require.NoError(t, err, "--%s=%s from the %s", name, v, way)
			require.Equal(t, want, fs.Lookup(name).Value.String(), "--%s=%s from the %s", name, v, way)
			// Every flag does something: it changes the configuration,
			// or it is named at startup as changing nothing in cairn.
			if _, inert := noEffect[name]; inert {
				require.True(t, slices.ContainsFunc(o.notes, func(n note) bool { return slices.Contains(n.args, any("--"+name)) }),
					"--%s changes nothing, and startup does not say so", name)
			} else if v != f.DefValue && name != "auto-compaction-mode" { // the mode alone, with retention 0, is still off
				require.False(t, reflect.DeepEqual(base.cfg, o.cfg) && reflect.DeepEqual(base.log, o.log),
					"--%s=%s from the %s changes nothing in the configuration", name, v, way)
			}
		}
	}
}

func assertFlag(t *testing.T, ok bool, format string, args ...any) bool {
	t.Helper()
	if !ok {
		t.Errorf(format, args...)
	}
	return ok
}

// samples are values each flag accepts that differ from its default, for
// the flags whose type alone does not give one.
var samples = map[string]string{
	"discovery":                 "http://127.0.0.1:1/token",
	"discovery-fallback":        "exit",
	"discovery-proxy":           "http://127.0.0.1:2",
	"discovery-srv":             "cairn.test",
	"discovery-srv-name":        "named",
	"cipher-suites":             "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"metrics":                   "extensive",
	"tls-min-version":           "TLS1.3",
	"tls-max-version":           "TLS1.2",
	"initial-cluster":           "default=http://127.0.0.1:2380",
	"initial-cluster-state":     "existing",
	"auto-compaction-mode":      "revision",
	"auto-compaction-retention": "100",
	"v2-deprecation":            "write-only",
	"proxy":                     "off",
	"enable-v2":                 "false",
	"auth-token":                "simple",
	"log-level":                 "warn",
	"logger":                    "zap",
	"max-learners":              "2",
	"experimental-enable-v2v3":  "",
	"cors":                      "https://a.example",
	"host-whitelist":            "a.example",
}

// companions are the flags a flag is refused without (etcd refuses them
// too), with a value.
var companions = map[string][2]string{
	"listen-client-urls":                   {"advertise-client-urls", "http://127.0.0.1:7"},
	"discovery-fallback":                   {"discovery", "http://127.0.0.1:1/token"},
	"discovery-proxy":                      {"discovery", "http://127.0.0.1:1/token"},
	"discovery-srv-name":                   {"discovery-srv", "cairn.test"},
	"enable-log-rotation":                  {"log-outputs", "/tmp/cairn-flags-test.log"},
	"experimental-compact-hash-check-time": {"experimental-compact-hash-check-enabled", "true"},
}

// shownAs is how a flag shows a sample it normalises.
var shownAs = map[string]string{}

// sample is a value f accepts, unlike its default where possible.
func sample(f *flag.Flag) string {
	if v, ok := samples[f.Name]; ok {
		return v
	}
	if strings.HasSuffix(f.Name, "-urls") {
		return "http://127.0.0.1:7"
	}
	if g, ok := f.Value.(flag.Getter); ok {
		switch d := g.Get().(type) {
		case bool:
			return fmt.Sprint(!d)
		case time.Duration:
			return (d + 7*time.Second).String()
		case int, uint, int64, uint64, uint32:
			return "7"
		case string:
			return "/x/" + f.Name
		}
	}
	return "/x/" + f.Name
}

// yamlFor is a configuration file setting flag name to v under etcd's key.
func yamlFor(name, v string) string {
	for _, nested := range []struct {
		key  string
		keys map[string]string
	}{{"client-transport-security", clientSecurityKeys}, {"peer-transport-security", peerSecurityKeys}, {"socket-options", socketKeys}} {
		for k, flagName := range nested.keys {
			if flagName == name {
				return fmt.Sprintf("%s:\n  %s: %q\n", nested.key, k, v)
			}
		}
	}
	if name == "experimental-snapshot-catchup-entries" {
		name = "experimental-snapshot-catch-up-entries"
	}
	return fmt.Sprintf("%s: %q\n", name, v)
}

// TestHelp: `cairn --help` lists every flag cairn takes, with its
// default, and nothing it does not take.
func TestHelp(t *testing.T) {
	names, defaults := helpFlags(t, help)
	_, fs, err := parseFlagSet(nil, nil, io.Discard)
	require.NoError(t, err)
	listed := map[string]bool{}
	for _, name := range names {
		listed[name] = true
		f := fs.Lookup(name)
		if assertFlag(t, f != nil, "--help lists --%s, which cairn does not take", name) {
			require.True(t, sameDefault(f, defaults[name]), "--%s: default %q, --help shows %q", name, f.DefValue, defaults[name])
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !listed[f.Name] && f.Name != "config-file" && f.Name != "version" {
			t.Errorf("--%s is missing from --help", f.Name)
		}
	})
	var out strings.Builder
	require.Equal(t, 0, run([]string{"--help"}, nil, &out, io.Discard, nil, nil))
	require.Equal(t, help, out.String())
}

// TestFlagRefusals: what cairn does not offer (etcd's v2 API, its v2
// proxy, v2 emulation) is refused with a message that says what to use; a
// flag given both on the command line and in the environment is refused,
// as etcd refuses it; an ETCD_ variable that names no flag, and a flag
// that changes nothing in cairn, are said at startup.
func TestFlagRefusals(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		says string
	}{
		{[]string{"--enable-v2"}, nil, "--enable-v2: cairn serves the v3 API only"},
		{nil, map[string]string{"ETCD_ENABLE_V2": "true"}, "--enable-v2: cairn serves the v3 API only"},
		{[]string{"--proxy", "on"}, nil, "--proxy on: cairn has no v2 proxy"},
		{[]string{"--proxy=readonly"}, nil, "--proxy readonly: cairn has no v2 proxy"},
		{[]string{"--proxy=sideways"}, nil, `invalid value "sideways" for flag -proxy`},
		{[]string{"--experimental-enable-v2v3", "/v2"}, nil, "--experimental-enable-v2v3: cairn serves the v3 API only"},
		{[]string{"--logger", "capnslog"}, nil, `invalid value "capnslog" for flag -logger`},
		{[]string{"--listen-client-urls", "http://127.0.0.1:2379"}, nil, "--advertise-client-urls is required when --listen-client-urls is set explicitly"},
		{[]string{"--self-signed-cert-validity=0"}, nil, "selfSignedCertValidity is invalid,it should be greater than 0"},
		{[]string{"--tls-min-version=TLS1.1"}, nil, `unexpected TLS version "TLS1.1" (must be one of: TLS1.2, TLS1.3)`},
		{[]string{"--tls-min-version=TLS1.3", "--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}, nil, "cipher suites cannot be configured when only TLS1.3 is enabled"},
		{[]string{"--cipher-suites=TLS_RSA_WITH_NOTHING"}, nil, `unexpected TLS cipher suite "TLS_RSA_WITH_NOTHING"`},
		{[]string{"--experimental-enable-distributed-tracing", "--experimental-distributed-tracing-sampling-rate=2000000"}, nil, "tracing sampling rate must be less than 1000000"},
		{[]string{"--initial-cluster", "default=http://127.0.0.1:2380", "--discovery", "https://discovery.etcd.io/x"}, nil, `multiple discovery or bootstrap flags are set. Choose one of "initial-cluster", "discovery" or "discovery-srv"`},
		{[]string{"--discovery-srv", "cairn.test", "--discovery", "https://discovery.etcd.io/x"}, nil, "multiple discovery or bootstrap flags are set"},
		{[]string{"--discovery-fallback", "sideways"}, nil, `invalid value "sideways" for flag -discovery-fallback`},
		{[]string{"--name", "a"}, map[string]string{"ETCD_NAME": "b"}, `conflicting environment variable "ETCD_NAME" is shadowed by corresponding command-line flag`},
		{[]string{"--name", "a"}, map[string]string{"CAIRN_NAME": "b"}, `conflicting environment variable "CAIRN_NAME"`},
	} {
		_, err := parseFlags(tc.args, tc.env, io.Discard)
		require.ErrorContains(t, err, tc.says, "%q %v", tc.args, tc.env)
	}
	o, err := parseFlags([]string{"--backend-bbolt-freelist-type=array"}, map[string]string{"ETCD_NO_SUCH": "1", "ETCD_NAME": "n", "ETCD_VERSION": "1", "HOME": "/"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "n", o.cfg.Name)
	var said []string
	for _, n := range o.notes {
		said = append(said, fmt.Sprint(n.msg, " ", n.args))
	}
	require.Equal(t, []string{
		"recognized and used environment variable [variable-name ETCD_NAME variable-value n]",
		"unrecognized environment variable [environment-variable ETCD_NO_SUCH=1]",
		"cannot set special environment variable [key ETCD_VERSION value 1]",
		"flag accepted but changes nothing in cairn [flag --backend-bbolt-freelist-type value array why the page file keeps its own free list; there is no bbolt]",
	}, said)
	// What the binary writes: the notes as log lines once logging is set
	// up, then the refusal.
	var stderr strings.Builder
	require.Equal(t, 2, run([]string{"--enable-v2=true"}, nil, io.Discard, &stderr, nil, nil))
	require.Contains(t, stderr.String(), "cairn: --enable-v2: cairn serves the v3 API only")
}
