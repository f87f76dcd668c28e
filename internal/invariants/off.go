//go:build !invariants

package invariants

// Enabled is false: the binary was built without the invariants tag.
const Enabled = false
