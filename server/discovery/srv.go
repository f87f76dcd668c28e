// Package discovery bootstraps a new cluster's member list the ways etcd
// does besides --initial-cluster: from DNS SRV records (--discovery-srv)
// and from an etcd v2 discovery service (--discovery).
package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Resolver is the DNS resolver SRV discovery uses (tests point it at a
// server of their own).
var Resolver = net.DefaultResolver

// lookupTimeout bounds each DNS query.
const lookupTimeout = 10 * time.Second

// SRVCluster is etcd's --discovery-srv: the --initial-cluster value made
// from the SRV records _etcd-server-ssl._tcp.<domain> (https peer URLs)
// and _etcd-server._tcp.<domain> (http), with "-<serviceName>" after
// etcd-server(-ssl) when serviceName is set. A record whose target
// resolves to one of this member's advertised peer URLs takes this
// member's name; the others are named 0, 1, ... (names only label the
// bootstrap: members are known by their peer URLs). This member must be
// among them.
func SRVCluster(name, domain, serviceName string, advertised []string) (string, error) {
	suffix := ""
	if serviceName != "" {
		suffix = "-" + serviceName
	}
	self := map[string]*url.URL{}
	for _, s := range advertised {
		u, err := url.Parse(s)
		if err != nil {
			return "", err
		}
		addr, err := resolveTCP(u.Host)
		if err != nil {
			return "", fmt.Errorf("resolving %s: %w", u.Host, err)
		}
		self[addr] = u
	}
	next := 0
	var parts []string
	var errs []error
	for _, svc := range []struct{ scheme, service string }{{"https", "etcd-server-ssl" + suffix}, {"http", "etcd-server" + suffix}} {
		got, err := srvParts(svc.scheme, svc.service, name, domain, self, &next, &errs)
		if err != nil {
			errs = append(errs, err)
		}
		parts = append(parts, got...)
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("no SRV records for %s: %w", domain, errors.Join(errs...))
	}
	found := false
	for _, p := range parts {
		found = found || strings.HasPrefix(p, name+"=")
	}
	if !found {
		if len(errs) > 0 {
			return "", fmt.Errorf("cannot find local etcd member %q in SRV records: %w", name, errors.Join(errs...))
		}
		return "", fmt.Errorf("cannot find local etcd member %q in SRV records", name)
	}
	return strings.Join(parts, ","), nil
}

// srvParts is etcd's getCluster for one service: name=scheme://target:port
// for each record. A record it skips is said in skipped.
func srvParts(scheme, service, name, domain string, self map[string]*url.URL, next *int, skipped *[]error) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	_, records, err := Resolver.LookupSRV(ctx, service, "tcp", domain)
	if err != nil {
		return nil, fmt.Errorf("error querying DNS SRV records for _%s %w", service, err)
	}
	var parts []string
	var errs []error
	for _, r := range records {
		port := strconv.Itoa(int(r.Port))
		host := strings.TrimSuffix(r.Target, ".")
		addr, err := resolveTCP(net.JoinHostPort(host, port))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n := ""
		u, isSelf := self[addr]
		if isSelf {
			n = name
		} else {
			n = strconv.Itoa(*next)
			*next++
		}
		if isSelf && u.Scheme != scheme {
			errs = append(errs, fmt.Errorf("bootstrap at %s from DNS for %s has scheme mismatch with expected peer %s", scheme+"://"+net.JoinHostPort(host, port), service, u))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%s://%s", n, scheme, net.JoinHostPort(host, port)))
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("error querying DNS SRV records for _%s %w", service, errors.Join(errs...))
	}
	*skipped = append(*skipped, errs...)
	return parts, nil
}

// resolveTCP is host:port with the host resolved to its first address.
func resolveTCP(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip != nil {
		return net.JoinHostPort(ip.String(), port), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	ips, err := Resolver.LookupIPAddr(ctx, host)
	if err != nil {
		return "", err
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("no address for %s", host)
	}
	return net.JoinHostPort(ips[0].IP.String(), port), nil
}
