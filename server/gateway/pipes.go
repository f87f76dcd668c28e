package gateway

// pipeAddr names the in-process connections of the gateway.
type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "gateway" }
