package kvbench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Progress writers: a bar redrawn in place on a terminal, a line an
// interval otherwise.

// ProgressBar returns a RunConfig.Progress that redraws one line on w.
// Done ends the line.
func ProgressBar(w io.Writer) (progress func(Progress), done func()) {
	return func(p Progress) {
			frac := -1.0
			switch {
			case p.Total > 0:
				frac = float64(p.Done) / float64(p.Total)
			case p.Of > 0:
				frac = p.Elapsed.Seconds() / p.Of.Seconds()
			}
			bar := ""
			if frac >= 0 {
				frac = min(frac, 1)
				n := int(frac * 30)
				bar = fmt.Sprintf("[%s%s] %3.0f%% ", strings.Repeat("=", n), strings.Repeat(" ", 30-n), frac*100)
			}
			fmt.Fprintf(w, "\r%s%d done, %.0f/s, %d errors, %s  ", bar, p.Done, p.Rate, p.Errors, p.Elapsed.Round(100*time.Millisecond))
		}, func() {
			fmt.Fprintln(w)
		}
}

// ProgressLines returns a RunConfig.Progress that writes a line each time.
func ProgressLines(w io.Writer) func(Progress) {
	return func(p Progress) {
		fmt.Fprintf(w, "%s: %d done, %.0f/s, %d errors\n", p.Elapsed.Round(time.Millisecond), p.Done, p.Rate, p.Errors)
	}
}
