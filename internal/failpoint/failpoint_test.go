package failpoint

import (
	"errors"
	"testing"
)

func TestEnableHitDisable(t *testing.T) {
	boom := errors.New("boom")
	if err := Hit("x/y"); err != nil {
		t.Fatalf("disarmed point returned %v", err)
	}
	n := 0
	Enable("x/y", func() error { n++; return boom })
	if err := Hit("x/y"); !errors.Is(err, boom) {
		t.Fatalf("armed point returned %v, want boom", err)
	}
	if err := Hit("x/other"); err != nil {
		t.Fatalf("other point returned %v", err)
	}
	Disable("x/y")
	Disable("x/y")
	if err := Hit("x/y"); err != nil || n != 1 {
		t.Fatalf("after disable: err=%v calls=%d", err, n)
	}
	if enabled.Load() != 0 {
		t.Fatalf("enabled count %d after disabling everything", enabled.Load())
	}
}
