// Package profiling is the commands' --profile switch: cpu, mem or mutex,
// written into a folder by github.com/pkg/profile.
package profiling

import (
	"fmt"

	"github.com/pkg/profile"
)

// Start starts the profile mode names ("" for none) into dir, and returns
// what stops it and writes the file.
func Start(mode, dir string) (stop func(), err error) {
	var m func(*profile.Profile)
	switch mode {
	case "":
		return func() {}, nil
	case "cpu":
		m = profile.CPUProfile
	case "mem":
		m = profile.MemProfile
	case "mutex":
		m = profile.MutexProfile
	default:
		return nil, fmt.Errorf("--profile %q: want cpu, mem or mutex", mode)
	}
	return profile.Start(m, profile.ProfilePath(dir), profile.Quiet).Stop, nil
}
