package main

import (
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLogLines: a line is one JSON object with etcd's keys (level, ts,
// caller, msg) and zap's value forms; it goes to every --log-outputs
// target (stdout, stderr, files).
func TestLogLines(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cairn.log")
	o, err := parseFlags([]string{"--log-outputs", "stdout,stderr," + file, "--log-level", "debug"}, nil, io.Discard)
	require.NoError(t, err)
	var stdout, stderr strings.Builder
	log, closer, err := o.log.open(&stdout, &stderr)
	require.NoError(t, err)
	log.Warn("slow fdatasync", "took", "1.2s")
	require.NoError(t, closer.Close())
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	for _, out := range []string{stdout.String(), stderr.String(), string(data)} {
		var line map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &line), out)
		require.Equal(t, "warn", line["level"])
		require.Equal(t, "slow fdatasync", line["msg"])
		require.Equal(t, "1.2s", line["took"])
		require.Regexp(t, `^cairn/logging_test\.go:\d+$`, line["caller"])
		ts, err := time.Parse("2006-01-02T15:04:05.000Z0700", line["ts"].(string))
		require.NoError(t, err, line["ts"])
		require.WithinDuration(t, time.Now(), ts, time.Hour)
	}
}

// TestLogRotation: with --enable-log-rotation the one file output rolls
// over at maxsize (MB), keeping the old file beside it.
func TestLogRotation(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cairn.log")
	o, err := parseFlags([]string{"--log-outputs", file, "--enable-log-rotation", "--log-rotation-config-json", `{"maxsize": 1, "maxbackups": 2}`}, nil, io.Discard)
	require.NoError(t, err)
	log, closer, err := o.log.open(io.Discard, io.Discard)
	require.NoError(t, err)
	pad := strings.Repeat("x", 4096)
	for range 600 { // about 2.5 MB
		log.Info("apply request took too long", "pad", pad)
	}
	require.NoError(t, closer.Close())
	names, err := filepath.Glob(filepath.Join(dir, "cairn-*.log"))
	require.NoError(t, err)
	require.Len(t, names, 2, "two rolled-over files kept")
	st, err := os.Stat(file)
	require.NoError(t, err)
	require.LessOrEqual(t, st.Size(), int64(1<<20))
}

// TestLogToJournal: systemd/journal sends each line to journald's socket
// with its level as the priority; without journald, lines go to stderr.
func TestLogToJournal(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "journal")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	require.NoError(t, err)
	defer conn.Close()
	saved := journalSocket
	journalSocket = sock
	defer func() { journalSocket = saved }()
	o, err := parseFlags([]string{"--log-outputs", "systemd/journal"}, nil, io.Discard)
	require.NoError(t, err)
	var stderr strings.Builder
	log, _, err := o.log.open(io.Discard, &stderr)
	require.NoError(t, err)
	log.Warn("leader changed")
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(buf)
	require.NoError(t, err)
	got := string(buf[:n])
	require.Contains(t, got, "PRIORITY=4\n")
	require.Contains(t, got, `"msg":"leader changed"`)
	require.Contains(t, got, "SYSLOG_IDENTIFIER=")
	require.Empty(t, stderr.String())

	journalSocket = filepath.Join(t.TempDir(), "none")
	log, _, err = o.log.open(io.Discard, &stderr)
	require.NoError(t, err)
	log.Info("ready to serve client requests")
	require.Contains(t, stderr.String(), `"msg":"ready to serve client requests"`)
}

// TestLoggingRefusals: what etcd refuses of the logging flags.
func TestLoggingRefusals(t *testing.T) {
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--log-outputs", "default,stdout"}, `multi logoutput for "default" is not supported yet`},
		{[]string{"--log-outputs", "systemd/journal,stdout"}, "running with systemd/journal but other '--log-outputs' values"},
		{[]string{"--enable-log-rotation"}, "--log-outputs requires a single file path when --log-rotate-config-json is defined"},
		{[]string{"--enable-log-rotation", "--log-outputs", "/a.log,/b.log"}, "--log-outputs requires a single file path"},
		{[]string{"--enable-log-rotation", "--log-outputs", "/a.log", "--log-rotation-config-json", "{maxsize"}, "improperly formatted log rotation config"},
		{[]string{"--enable-log-rotation", "--log-outputs", "/a.log", "--log-rotation-config-json", `{"maxsize": "big"}`}, "invalid log rotation config"},
	} {
		_, err := parseFlags(tc.args, nil, io.Discard)
		require.ErrorContains(t, err, tc.says, "%q", tc.args)
	}
}
