package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"
)

// logging is etcd's logging flags: --log-level, --log-outputs,
// --enable-log-rotation and --log-rotation-config-json (--logger takes
// zap only, which is what this writes: one JSON object a line with
// etcd's keys level, ts, caller and msg).
type logging struct {
	level    slog.Level
	outputs  []string
	rotate   bool
	rotation string // JSON: maxsize (MB), maxage (days), maxbackups, localtime, compress
}

// The special --log-outputs values.
const (
	outputDefault = "default" // stderr
	outputStderr  = "stderr"
	outputStdout  = "stdout"
	outputJournal = "systemd/journal"
)

// defaultRotation is --log-rotation-config-json's default.
const defaultRotation = `{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}`

// errRotationOutput is etcd's refusal of rotation without exactly one file.
var errRotationOutput = errors.New("--log-outputs requires a single file path when --log-rotate-config-json is defined")

// check refuses what etcd refuses: "default" among other outputs, the
// journal beside others, rotation without exactly one file among the
// outputs, a rotation configuration that is not JSON.
func (l logging) check() error {
	if len(l.outputs) > 1 && slices.Contains(l.outputs, outputDefault) {
		return fmt.Errorf("multi logoutput for %q is not supported yet", outputDefault)
	}
	if len(l.outputs) > 1 && slices.Contains(l.outputs, outputJournal) {
		return fmt.Errorf("running with systemd/journal but other '--log-outputs' values (%q) are configured with 'default'; override 'default' value with something else", l.outputs)
	}
	if l.rotate {
		files := 0
		for _, o := range l.outputs {
			if !slices.Contains([]string{outputDefault, outputStderr, outputStdout, outputJournal}, o) {
				files++
			}
		}
		if files != 1 {
			return errRotationOutput
		}
		if _, err := l.rotator(""); err != nil {
			return err
		}
	}
	return nil
}

// rotator is the rotating writer of file, as --log-rotation-config-json
// says.
func (l logging) rotator(file string) (*lumberjack.Logger, error) {
	r := &lumberjack.Logger{}
	if err := json.Unmarshal([]byte(l.rotation), r); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return nil, fmt.Errorf("improperly formatted log rotation config: %w", err)
		}
		return nil, fmt.Errorf("invalid log rotation config: %w", err)
	}
	r.Filename = file
	return r, nil
}

// open builds the logger: every line to each output. The closer closes
// the files opened.
func (l logging) open(stdout, stderr io.Writer) (*slog.Logger, io.Closer, error) {
	var ws []io.Writer
	var closers closeAll
	for _, o := range l.outputs {
		switch o {
		case outputDefault, outputStderr:
			ws = append(ws, stderr)
		case outputStdout:
			ws = append(ws, stdout)
		case outputJournal:
			ws = append(ws, &journalWriter{socket: journalSocket, fallback: stderr})
		default:
			if l.rotate {
				r, err := l.rotator(o)
				if err != nil {
					closers.Close()
					return nil, nil, err
				}
				ws = append(ws, r)
				closers = append(closers, r)
				continue
			}
			f, err := os.OpenFile(o, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err != nil {
				closers.Close()
				return nil, nil, fmt.Errorf("--log-outputs: %w", err)
			}
			ws = append(ws, f)
			closers = append(closers, f)
		}
	}
	w := io.Writer(io.Discard)
	if len(ws) == 1 {
		w = ws[0]
	} else if len(ws) > 1 {
		w = io.MultiWriter(ws...)
	}
	return slog.New(newLogHandler(w, l.level)), closers, nil
}

type closeAll []io.Closer

func (c closeAll) Close() error {
	var errs []error
	for _, x := range c {
		errs = append(errs, x.Close())
	}
	return errors.Join(errs...)
}

// newLogHandler writes etcd's JSON log lines: {"level":"info",
// "ts":"2006-01-02T15:04:05.000Z0700","caller":"member/raft.go:52",
// "msg":"...", then the attributes}.
func newLogHandler(w io.Writer, level slog.Level) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, AddSource: true, ReplaceAttr: etcdKeys})
}

// etcdKeys renames slog's built-in keys to etcd's (zap's) and writes
// their values as zap does.
func etcdKeys(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		return slog.String("ts", a.Value.Time().Format("2006-01-02T15:04:05.000Z0700"))
	case slog.LevelKey:
		return slog.String("level", strings.ToLower(a.Value.Any().(slog.Level).String()))
	case slog.SourceKey:
		src, ok := a.Value.Any().(*slog.Source)
		if !ok || src == nil {
			return slog.Attr{}
		}
		// zap's short caller: the file's folder and name.
		return slog.String("caller", fmt.Sprintf("%s:%d", filepath.Join(filepath.Base(filepath.Dir(src.File)), filepath.Base(src.File)), src.Line))
	}
	return a
}

// journalSocket is journald's native socket.
var journalSocket = "/run/systemd/journal/socket"

// journalWriter sends each log line to journald (its native protocol:
// one datagram of KEY=value lines), with the line's level as the
// priority; if journald cannot be reached, the line goes to fallback, as
// etcd's journal writer does.
type journalWriter struct {
	socket   string
	fallback io.Writer

	mu   sync.Mutex
	conn *net.UnixConn
}

// journalPriority is syslog's priority for each of etcd's levels.
var journalPriority = map[string]int{"debug": 7, "info": 6, "warn": 4, "error": 3}

func (j *journalWriter) Write(p []byte) (int, error) {
	var line struct {
		Level  string `json:"level"`
		Caller string `json:"caller"`
	}
	_ = json.Unmarshal(p, &line)
	pri, ok := journalPriority[line.Level]
	if !ok {
		pri = 2 // crit
	}
	msg := bytes.TrimRight(p, "\n")
	var b bytes.Buffer
	fmt.Fprintf(&b, "MESSAGE=%s\nPRIORITY=%d\nSYSLOG_IDENTIFIER=%s\n", msg, pri, filepath.Base(os.Args[0]))
	if line.Caller != "" {
		fmt.Fprintf(&b, "PACKAGE=%s\n", filepath.Dir(line.Caller))
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.conn == nil {
		conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: j.socket, Net: "unixgram"})
		if err != nil {
			return j.fallback.Write(p)
		}
		j.conn = conn
	}
	_ = j.conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := j.conn.Write(b.Bytes()); err != nil {
		j.conn.Close()
		j.conn = nil
		return j.fallback.Write(p)
	}
	return len(p), nil
}
