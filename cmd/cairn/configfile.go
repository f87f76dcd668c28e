package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// applyConfigFile sets the flags from an etcd YAML configuration file: its
// keys are the flag names; TLS settings sit under client-transport-security
// and peer-transport-security, socket options under socket-options, as in
// etcd's. A duration given as a number is in nanoseconds, as etcd reads
// it; one given as a string is Go's (5s, 10m). Keys cairn does not know
// are said in the log (o's notes) and ignored. The flags it sets are
// marked in given.
func applyConfigFile(o *options, fs *flag.FlagSet, path string, given map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config-file: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("--config-file %s: %w", path, err)
	}
	set := func(key string, v any) error {
		if v == nil {
			return nil
		}
		f := fs.Lookup(key)
		if f == nil || key == "config-file" {
			o.notes = append(o.notes, note{slog.LevelWarn, "configuration file key not supported; ignored", []any{"key", key}})
			return nil
		}
		var s string
		switch x := v.(type) {
		case []any:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			s = strings.Join(parts, ",")
		case int:
			s = fmt.Sprint(x)
			if g, ok := f.Value.(flag.Getter); ok {
				if _, isDuration := g.Get().(time.Duration); isDuration {
					s = time.Duration(x).String()
				}
			}
		default:
			s = fmt.Sprint(x)
		}
		if s == "" {
			return nil
		}
		if err := f.Value.Set(s); err != nil {
			return fmt.Errorf("--config-file %s: %s: %v", path, key, err)
		}
		given[key] = true
		return nil
	}
	for key, v := range doc {
		nested, prefix := map[string]string(nil), ""
		switch key {
		case "client-transport-security":
			nested, prefix = clientSecurityKeys, key
		case "peer-transport-security":
			nested, prefix = peerSecurityKeys, key
		case "socket-options":
			nested, prefix = socketKeys, key
		}
		if nested != nil {
			sec, _ := v.(map[string]any)
			for k, v := range sec {
				name, ok := nested[k]
				if !ok {
					name = prefix + "." + k // not a flag: said and ignored
				}
				if err := set(name, v); err != nil {
					return err
				}
			}
			continue
		}
		if key == "experimental-snapshot-catch-up-entries" {
			key = "experimental-snapshot-catchup-entries" // etcd's YAML spells it so
		}
		if err := set(key, v); err != nil {
			return err
		}
	}
	return nil
}

// clientSecurityKeys, peerSecurityKeys and socketKeys are the flags of
// etcd's nested configuration-file keys.
var (
	clientSecurityKeys = map[string]string{
		"cert-file": "cert-file", "key-file": "key-file", "trusted-ca-file": "trusted-ca-file",
		"client-cert-auth": "client-cert-auth", "auto-tls": "auto-tls",
		"client-cert-file": "client-cert-file", "client-key-file": "client-key-file",
		"crl-file": "client-crl-file", "allowed-hostname": "client-cert-allowed-hostname",
	}
	peerSecurityKeys = map[string]string{
		"cert-file": "peer-cert-file", "key-file": "peer-key-file", "trusted-ca-file": "peer-trusted-ca-file",
		"client-cert-auth": "peer-client-cert-auth", "auto-tls": "peer-auto-tls",
		"client-cert-file": "peer-client-cert-file", "client-key-file": "peer-client-key-file",
		"allowed-cn": "peer-cert-allowed-cn", "allowed-hostname": "peer-cert-allowed-hostname", "crl-file": "peer-crl-file",
	}
	socketKeys = map[string]string{"reuse-port": "socket-reuse-port", "reuse-address": "socket-reuse-address"}
)
