package failpoint

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
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

// EnableSpec arms points as gofail's spec names them: error, panic, and
// "N*off->" letting the first N hits pass; a spec it cannot read arms
// nothing.
func TestEnableSpec(t *testing.T) {
	defer Disable("a")
	defer Disable("b")
	require.NoError(t, EnableSpec("a=2*off->error; b=panic"))
	require.NoError(t, Hit("a"))
	require.NoError(t, Hit("a"))
	require.ErrorIs(t, Hit("a"), ErrInjected)
	require.ErrorIs(t, Hit("a"), ErrInjected)
	require.PanicsWithValue(t, "failpoint b", func() { _ = Hit("b") })
	require.NoError(t, Hit("c"))

	for _, bad := range []string{"a", "=error", "a=return", "a=x*off->error", "a=-1*off->error", "c=error;a=2*off->nothing"} {
		require.Error(t, EnableSpec(bad), bad)
	}
	Disable("a")
	Disable("b")
	require.NoError(t, Hit("c"), "a spec that failed armed c")
}
