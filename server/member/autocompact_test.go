package member

import (
	"testing"
	"time"
)

func TestParseAutoCompaction(t *testing.T) {
	for _, tc := range []struct {
		mode, retention string
		want            AutoCompaction
		bad             bool
	}{
		{"periodic", "1", AutoCompaction{Mode: "periodic", Period: time.Hour}, false},
		{"periodic", "30m", AutoCompaction{Mode: "periodic", Period: 30 * time.Minute}, false},
		{"periodic", "0", AutoCompaction{}, false},
		{"revision", "1000", AutoCompaction{Mode: "revision", Revisions: 1000}, false},
		{"revision", "1h", AutoCompaction{}, true},
		{"sometimes", "1", AutoCompaction{}, true},
	} {
		got, err := ParseAutoCompaction(tc.mode, tc.retention)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("%s %s: %+v %v", tc.mode, tc.retention, got, err)
		}
	}
}
