// Command cairnctl is cairn's command-line client. Its client commands
// are etcdctl v3.5's, with the same names, flags, ETCDCTL_* variables,
// output formats and exit codes, so a script written for etcdctl runs
// with cairnctl unchanged (and etcdctl itself works against cairn). Its
// offline commands work on a cairn data directory or snapshot file with no
// server running, as etcdutl's do on etcd's.
//
//	cairnctl put foo bar
//	cairnctl get foo --prefix -w json
//	cairnctl endpoint status --cluster -w table
//	cairnctl snapshot save backup.db
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Exit codes, etcdctl's.
const (
	exitError         = 1
	exitBadConnection = 2
	exitInvalidInput  = 3 // txn and watch input
	exitBadFeature    = 4 // a valid flag with a value not supported here
	exitInterrupted   = 5
	exitIO            = 6
	exitBadArgs       = 128
)

// codeError is an error with the code the process exits with.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

// fail is err with exit code code.
func fail(code int, err error) error { return &codeError{code, err} }

// failf is fail with a formatted message.
func failf(code int, format string, a ...any) error {
	return &codeError{code, fmt.Errorf(format, a...)}
}

// withCode is err with exit code code instead of its own, if it has one.
func withCode(code int, err error) error {
	var ce *codeError
	if errors.As(err, &ce) {
		err = ce.err
	}
	return fail(code, err)
}

// silentExit ends the process with code after the command has said why
// (on stderr) itself, as etcdctl's endpoint status and defrag do.
type silentExit int

func (e silentExit) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// run runs cairnctl with args and returns its exit code. Output goes to
// out; errors to errOut as "Error: <message>" (etcdctl's last line).
func run(args []string, in io.Reader, out, errOut io.Writer) int {
	return runContext(context.Background(), args, in, out, errOut)
}

// runContext is run with a context that long-running commands (make-mirror)
// end on.
func runContext(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	c := newCtl(ctx, in, out, errOut)
	defer c.close()
	root := c.rootCommand()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var se silentExit
	if errors.As(err, &se) {
		return int(se)
	}
	fmt.Fprintln(errOut, "Error:", err)
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.code
	}
	return exitError // cobra's own: an unknown flag or command
}

func init() {
	// etcdctl takes a command's unambiguous prefix ("mem" for member).
	cobra.EnablePrefixMatching = true
}
