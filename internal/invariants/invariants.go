// Package invariants reports whether expensive internal assertions are
// compiled in. Build with `-tags invariants` to enable them; CI runs the
// whole test suite both ways.
//
// Code guards costly checks with the constant so that the compiler removes
// them from ordinary builds:
//
//	if invariants.Enabled {
//		mustCheckEverything()
//	}
package invariants
